package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
)

// imageConfig writes an image config declaring targets into a content store
// below root and returns a container of that image.
func imageConfig(t *testing.T, root string, targets []string) *api.Container {
	t.Helper()
	vols := map[string]struct{}{}
	for _, v := range targets {
		vols[v] = struct{}{}
	}
	doc, err := json.Marshal(map[string]any{"config": map[string]any{"Volumes": vols}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(doc)
	dir := filepath.Join(root, "io.containerd.content.v1.content", "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hex.EncodeToString(sum[:])), doc, 0o644); err != nil {
		t.Fatal(err)
	}
	return &api.Container{Id: "c", Image: &api.Image{ConfigDigest: "sha256:" + hex.EncodeToString(sum[:])}}
}

func cacheBytes(iv *ImageVolumes) int {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	n := 0
	for k, v := range iv.cache {
		n += cachedBytes(k, v)
	}
	return n
}

// TestImageCacheBoundedByBytes: images whose VOLUME lists are as large as the
// plan accepts (64 targets of 4,000 bytes) never make the cache hold more
// than its byte budget, and the newest image is the one cached.
func TestImageCacheBoundedByBytes(t *testing.T) {
	root := t.TempDir()
	iv := NewImageVolumes(root, 64)
	var last *api.Container
	for i := range 40 {
		targets := make([]string, 64)
		for j := range targets {
			targets[j] = fmt.Sprintf("/%d/%d/%s", i, j, strings.Repeat("v", 4000))
		}
		last = imageConfig(t, root, targets)
		got, _, err := iv.ForContainer(last)
		if err != nil || len(got) != 64 {
			t.Fatalf("image %d: %d targets, %v", i, len(got), err)
		}
	}
	if n := cacheBytes(iv); n > imageConfigCacheBytes {
		t.Errorf("image config cache holds %d bytes, more than its %d", n, imageConfigCacheBytes)
	}
	if _, ok := iv.cache[strings.TrimPrefix(last.Image.ConfigDigest, "sha256:")]; !ok {
		t.Errorf("the newest image is not cached")
	}
}

// TestImageCacheSkipsRefusedImages: an image the plan refuses (too many
// VOLUMEs, a VOLUME on /proc) is read every time, never cached, and still
// reported as it is so that the plan names the reason.
func TestImageCacheSkipsRefusedImages(t *testing.T) {
	root := t.TempDir()
	iv := NewImageVolumes(root, 64)
	many := make([]string, 65)
	for i := range many {
		many[i] = fmt.Sprintf("/v%d", i)
	}
	for _, targets := range [][]string{many, {"/data", "/proc/x"}} {
		got, _, err := iv.ForContainer(imageConfig(t, root, targets))
		if err != nil || len(got) != len(targets) {
			t.Fatalf("ForContainer = %d targets, %v; want %d", len(got), err, len(targets))
		}
	}
	if len(iv.cache) != 0 {
		t.Errorf("refused images cached: %d entries", len(iv.cache))
	}
	if _, _, err := iv.ForContainer(imageConfig(t, root, []string{"/data"})); err != nil || len(iv.cache) != 1 {
		t.Errorf("an acceptable image: %v, %d cached", err, len(iv.cache))
	}
}
