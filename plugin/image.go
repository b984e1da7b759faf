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
	"strings"
	"sync"

	"github.com/containerd/nri/pkg/api"
	"golang.org/x/sys/unix"
)

// maxImageConfig bounds the image config blob the plugin reads. Real configs
// are a few KiB; history-heavy ones stay far below this.
const maxImageConfig = 4 << 20

// imageConfigCacheSize bounds the cache of parsed image configs.
const imageConfigCacheSize = 512

// ImageVolumes finds the VOLUMEs an image declares. It reads image configs
// from containerd's content store by digest and caches them; it is safe for
// concurrent use.
type ImageVolumes struct {
	contentDir string
	mu         sync.Mutex
	cache      map[string][]string
}

// NewImageVolumes reads image configs below containerdRoot.
func NewImageVolumes(containerdRoot string) *ImageVolumes {
	return &ImageVolumes{
		contentDir: filepath.Join(containerdRoot, "io.containerd.content.v1.content", "blobs", "sha256"),
		cache:      map[string][]string{},
	}
}

// ErrNoImageInfo says the runtime sent no image config digest.
var ErrNoImageInfo = errors.New("the runtime sent no image config digest")

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
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexDigest) != 64 || strings.Trim(hexDigest, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("image config digest %q is not a sha256 digest", digest)
	}
	iv.mu.Lock()
	t, ok := iv.cache[hexDigest]
	iv.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := iv.read(hexDigest)
	if err != nil {
		return nil, fmt.Errorf("image config %s: %w", digest, err)
	}
	iv.mu.Lock()
	if len(iv.cache) >= imageConfigCacheSize {
		clear(iv.cache)
	}
	iv.cache[hexDigest] = t
	iv.mu.Unlock()
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
