package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/containerd/nri/pkg/api"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// maxImageConfig bounds the image config blob the plugin reads. Real configs
// are a few KiB; history-heavy ones stay far below this.
const maxImageConfig = 4 << 20

// imageConfigCacheBytes bounds the memory the cache of image VOLUME lists
// holds, counted by cachedBytes.
const imageConfigCacheBytes = 1 << 20

// ImageVolumes finds the VOLUMEs an image declares. It reads image configs
// from containerd's content store by digest and caches the VOLUME lists of
// the images it would accept; it is safe for concurrent use.
type ImageVolumes struct {
	contentDir string
	maxVolumes int
	mu         sync.Mutex
	cache      map[string][]string
	order      []string // digests in the order they were cached, oldest first
	bytes      int      // cachedBytes of every entry in cache
}

// NewImageVolumes reads image configs below containerdRoot. An image that
// declares more than maxVolumes VOLUMEs, or one the plan refuses, is never
// cached.
func NewImageVolumes(containerdRoot string, maxVolumes int) *ImageVolumes {
	return &ImageVolumes{
		contentDir: filepath.Join(containerdRoot, "io.containerd.content.v1.content", "blobs", "sha256"),
		maxVolumes: maxVolumes,
		cache:      map[string][]string{},
	}
}

// cachedBytes is what an entry of the cache costs, roughly: the key, the
// slice and each string's header and bytes.
func cachedBytes(hexDigest string, targets []string) int {
	n := len(hexDigest) + 64
	for _, t := range targets {
		n += len(t) + 16
	}
	return n
}

// acceptable reports whether MakePlan could accept the image's VOLUMEs; only
// those are worth caching.
func (iv *ImageVolumes) acceptable(targets []string) bool {
	if len(targets) > iv.maxVolumes {
		return false
	}
	for _, t := range targets {
		if _, err := cleanTarget(t); err != nil {
			return false
		}
	}
	return true
}

// remember caches targets, evicting the oldest entries to stay within
// imageConfigCacheBytes.
func (iv *ImageVolumes) remember(hexDigest string, targets []string) {
	cost := cachedBytes(hexDigest, targets)
	if cost > imageConfigCacheBytes || !iv.acceptable(targets) {
		return
	}
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if _, ok := iv.cache[hexDigest]; ok {
		return
	}
	for iv.bytes+cost > imageConfigCacheBytes && len(iv.order) > 0 {
		old := iv.order[0]
		iv.order = iv.order[1:]
		iv.bytes -= cachedBytes(old, iv.cache[old])
		delete(iv.cache, old)
	}
	iv.cache[hexDigest] = targets
	iv.order = append(iv.order, hexDigest)
	iv.bytes += cost
}

// ForContainer returns the image's VOLUME targets, sorted. When the runtime
// sends the config digest (containerd 2.4 and later) they come from the
// config blob; otherwise from the mounts containerd's own image-volume
// handling made; fromConfig says which source answered.
func (iv *ImageVolumes) ForContainer(ctr *api.Container) (targets []string, fromConfig bool, err error) {
	if digest := ctr.GetImage().GetConfigDigest(); digest != "" {
		t, err := iv.fromConfig(digest)
		return t, true, err
	}
	for _, m := range ctr.GetMounts() {
		if isRuntimeImageVolume(m, ctr.GetId()) {
			targets = append(targets, m.Destination)
		}
	}
	sort.Strings(targets)
	return targets, false, nil
}

func (iv *ImageVolumes) fromConfig(digest string) ([]string, error) {
	hexDigest, err := volumes.ParseImageDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("image config digest %q is not a sha256 digest", digest)
	}
	iv.mu.Lock()
	t, ok := iv.cache[hexDigest]
	iv.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err = iv.read(hexDigest)
	if err != nil {
		return nil, fmt.Errorf("image config %s: %w", digest, err)
	}
	iv.remember(hexDigest, t)
	return t, nil
}

func (iv *ImageVolumes) read(hexDigest string) ([]string, error) {
	fd, err := unix.Open(filepath.Join(iv.contentDir, hexDigest), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the blob in containerd's content store: %w", err)
	}
	f := os.NewFile(uintptr(fd), hexDigest)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxImageConfig+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxImageConfig {
		return nil, fmt.Errorf("larger than %d bytes", maxImageConfig)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != hexDigest {
		return nil, errors.New("content does not match its digest")
	}
	var cfg struct {
		Config struct {
			Volumes map[string]json.RawMessage `json:"Volumes"`
		} `json:"config"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	targets := make([]string, 0, len(cfg.Config.Volumes))
	for t := range cfg.Config.Volumes {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	return targets, nil
}
