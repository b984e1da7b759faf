package e2e

import (
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestImageVolumeTimes: copy-up keeps the image's times. The hook's copy
// (containerd's image volumes off) keeps a directory's as well as a file's.
// A copy the plugin adopts from containerd keeps the files' times, while
// its directories carry the time of containerd's copy, as containerd's own
// image volumes do: continuity's CopyDir dates a directory before filling
// it. The harness dates every entry of an image 2024-01-01.
func TestImageVolumeTimes(t *testing.T) {
	img := harness.Image{
		Name:       "localhost/conf:e2e",
		Entrypoint: []string{"/bin/sleep", "2147483647"},
		Volumes:    []string{"/data"},
		Files: []harness.File{
			harness.Directory("/data/conf", 0o755, 999, 999),
			harness.RegularFile("/data/conf/app.conf", "port 6379\n", 0o644, 999, 999),
		},
	}
	const imageTime = "1704067200"
	for _, tc := range []struct {
		name   string
		ignore bool
	}{
		{"adopted from containerd", false},
		{"copied by the hook", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, harness.ContainerdOptions{IgnoreImageDefinedVolumes: tc.ignore}, harness.PluginConfig{})
			e.ctd.Import(t, img)
			pod := e.cr.RunPod("conf", "default", "uid-conf", nil)
			id, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "app", Image: img.Name})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			e.cr.Start(id)
			if got := trim(e.cr.Exec(id, "stat", "-c", "%Y", "/data/conf/app.conf")); got != imageTime {
				t.Errorf("mtime of /data/conf/app.conf = %s, want the image's %s (2024-01-01)", got, imageTime)
			}
			got := trim(e.cr.Exec(id, "stat", "-c", "%Y", "/data/conf"))
			if tc.ignore && got != imageTime {
				t.Errorf("mtime of /data/conf = %s, want the image's %s (2024-01-01)", got, imageTime)
			}
			if !tc.ignore && got == imageTime {
				t.Errorf("mtime of /data/conf is the image's: the copy was not containerd's, so the test no longer shows the difference")
			}
		})
	}
}
