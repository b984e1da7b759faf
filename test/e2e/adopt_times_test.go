package e2e

import (
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestImageVolumeDirectoryTimes: copy-up keeps the image's times (SPEC,
// Semantics), a directory's as well as a file's, however the volume is
// filled. The harness dates every entry of an image 2024-01-01.
func TestImageVolumeDirectoryTimes(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	img := harness.Image{
		Name:       "localhost/conf:e2e",
		Entrypoint: []string{"/bin/sleep", "2147483647"},
		Volumes:    []string{"/data"},
		Files: []harness.File{
			harness.Directory("/data/conf", 0o755, 999, 999),
			harness.RegularFile("/data/conf/app.conf", "port 6379\n", 0o644, 999, 999),
		},
	}
	e.ctd.Import(t, img)
	pod := e.cr.RunPod("conf", "default", "uid-conf", nil)
	id, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "app", Image: img.Name})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	e.cr.Start(id)
	if got := trim(e.cr.Exec(id, "stat", "-c", "%n %Y", "/data/conf", "/data/conf/app.conf")); got != "/data/conf 1704067200\n/data/conf/app.conf 1704067200" {
		t.Errorf("mtimes in the volume:\n%s\nwant the image's 1704067200 (2024-01-01) for both", got)
	}
}
