package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestContainerAnnotationWins checks NRI's precedence: a container-scoped
// pod annotation beats the pod-scoped one, and the container's own CRI
// annotation beats both.
func TestContainerAnnotationWins(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("scopes", "default", "uid-scopes", map[string]string{
		podKey: "- {type: tmpfs, target: /scratch, size: 8Mi}",
		"volumes.noderesource.dev/container.special": "- {type: tmpfs, target: /scratch, size: 4Mi}",
	})
	plain := e.cr.RunContainer(pod, "plain", appImage, nil, nil)
	special := e.cr.RunContainer(pod, "special", appImage, nil, nil)
	own := e.cr.RunContainer(pod, "own", appImage, map[string]string{
		podKey: "- {type: tmpfs, target: /scratch, size: 2Mi}",
	}, nil)
	for _, tc := range []struct {
		name, id, size string
	}{
		{"pod annotation", plain, "size=8192k"},
		{"container-scoped pod annotation", special, "size=4096k"},
		{"container's own annotation", own, "size=2048k"},
	} {
		if line := mountLine(t, e.cr.Exec(tc.id, "cat", "/proc/mounts"), "/scratch"); !strings.Contains(line, tc.size) {
			t.Errorf("%s: /scratch = %q, want %s", tc.name, line, tc.size)
		}
	}
}

// TestCRIMountWinsOverImageVolume checks that a mount the CRI request
// already has at an image VOLUME's target (a Kubernetes volumeMount) is
// kept, and no anonymous volume is made for it.
func TestCRIMountWinsOverImageVolume(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.ctd.Import(t, dbImage)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "from-kubelet"), []byte("k8s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := e.cr.RunPod("db", "default", "uid-db-cri", nil)
	id := e.cr.RunContainer(pod, "db", dbImage.Name, nil, []harness.Mount{{HostPath: hostDir, ContainerPath: "/data"}})
	if got := e.cr.Exec(id, "cat", "/data/from-kubelet"); got != "k8s\n" {
		t.Errorf("/data/from-kubelet = %q", got)
	}
	if got := e.anonymousVolumes("default"); len(got) != 0 {
		t.Errorf("anonymous volumes made despite the CRI mount: %v", got)
	}
}

// TestImageVolumeModes checks the image-volumes annotation: tmpfs gives a
// sized tmpfs holding the image's content, ignore gives nothing.
func TestImageVolumeModes(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{IgnoreImageDefinedVolumes: true}, harness.PluginConfig{TmpfsDefaultSize: "32Mi"})
	e.ctd.Import(t, dbImage)

	t.Run("tmpfs", func(t *testing.T) {
		pod := e.cr.RunPod("db-tmpfs", "default", "uid-db-tmpfs", map[string]string{"image-volumes.noderesource.dev/pod": "tmpfs"})
		id := e.cr.RunContainer(pod, "db", dbImage.Name, nil, nil)
		line := mountLine(t, e.cr.Exec(id, "cat", "/proc/mounts"), "/data")
		if !strings.HasPrefix(line, "tmpfs ") || !strings.Contains(line, "size=32768k") {
			t.Errorf("/data = %q, want a tmpfs of the default size 32Mi", line)
		}
		if got := e.cr.Exec(id, "cat", "/data/seed.txt"); got != "seeded by the image\n" {
			t.Errorf("/data/seed.txt = %q, want the image's content", got)
		}
		if got := e.anonymousVolumes("default"); len(got) != 0 {
			t.Errorf("anonymous volumes made for a tmpfs image volume: %v", got)
		}
		e.cr.RmPod(pod)
	})
	t.Run("ignore", func(t *testing.T) {
		pod := e.cr.RunPod("db-ignore", "default", "uid-db-ignore", map[string]string{"image-volumes.noderesource.dev/pod": "ignore"})
		id := e.cr.RunContainer(pod, "db", dbImage.Name, nil, nil)
		if out := e.cr.Exec(id, "cat", "/proc/mounts"); strings.Contains(out, " /data ") {
			t.Errorf("/data is a mount point with imageVolumes ignore:\n%s", out)
		}
		if got := e.anonymousVolumes("default"); len(got) != 0 {
			t.Errorf("anonymous volumes made with imageVolumes ignore: %v", got)
		}
		e.cr.RmPod(pod)
	})
}

// TestKeepAfterPod checks that with keepAfterPod an anonymous volume
// outlives its pod, and that volume prune then removes it.
func TestKeepAfterPod(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{KeepAfterPod: true})
	e.ctd.Import(t, dbImage)
	pod := e.cr.RunPod("db", "default", "uid-db-keep", nil)
	id := e.cr.RunContainer(pod, "db", dbImage.Name, nil, nil)
	e.cr.Sh(id, "echo precious > /data/precious")
	e.cr.RmPod(pod)
	anon := e.anonymousVolumes("default")
	if len(anon) != 1 {
		t.Fatalf("anonymous volumes after the pod went: %v, want one", anon)
	}
	if got, err := os.ReadFile(filepath.Join(e.plugin.VolumeDir("default", anon[0]), "precious")); err != nil || string(got) != "precious\n" {
		t.Errorf("kept volume holds %q, %v", got, err)
	}
	e.volume("prune", "-f")
	if got := e.anonymousVolumes("default"); len(got) != 0 {
		t.Errorf("anonymous volumes after prune: %v", got)
	}
}

// TestVolumeInspect checks the inspect JSON of a named volume in use.
func TestVolumeInspect(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.volume("create", "--label", "app=redis", "redis-data")
	pod := e.cr.RunPod("redis", "default", "uid-inspect", map[string]string{podKey: "- redis-data:/data"})
	id := e.cr.RunContainer(pod, "redis", appImage, nil, nil)

	var got []struct {
		Name, Namespace, Mountpoint, CreatedAt string
		Labels                                 map[string]string
		Anonymous                              bool
		UsedBy                                 []string
	}
	out := e.volume("inspect", "redis-data")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("volume inspect output is not a JSON array: %v\n%s", err, out)
	}
	if len(got) != 1 {
		t.Fatalf("volume inspect returned %d objects", len(got))
	}
	v := got[0]
	if v.Name != "redis-data" || v.Namespace != "default" || v.Anonymous || v.Labels["app"] != "redis" ||
		v.Mountpoint != e.plugin.VolumeDir("default", "redis-data") || v.CreatedAt == "" {
		t.Errorf("volume inspect = %+v", v)
	}
	if len(v.UsedBy) != 1 || v.UsedBy[0] != id {
		t.Errorf("UsedBy = %v, want [%s]", v.UsedBy, id)
	}
}

// TestPluginLaunchedByContainerd installs the binary in containerd's NRI
// plugin_path with its configuration in plugin_config_path, and checks that
// containerd runs it and it does its job.
func TestPluginLaunchedByContainerd(t *testing.T) {
	bins := testBins(t)
	root := t.TempDir()
	ctd := harness.StartContainerd(t, bins, harness.ContainerdOptions{
		NRIPlugins: []harness.NRIPlugin{{
			Name: "10-volumes",
			Bin:  bins.NRIVolumes,
			Config: func(c *harness.Containerd) string {
				return harness.PluginConfig{Root: root, ContainerdRoot: c.Root, HookPath: harness.HookBeside(bins.NRIVolumes)}.YAML()
			},
		}},
	})
	ctd.WaitSynced(t, "10-volumes", 0)
	ctd.Import(t, harness.Image{Name: appImage, Entrypoint: []string{"/bin/sleep", "2147483647"}})

	cr := ctd.Crictl(t)
	pod := cr.RunPod("launched", "default", "uid-launched", map[string]string{podKey: "- data:/data"})
	id := cr.RunContainer(pod, "app", appImage, nil, nil)
	cr.Sh(id, "echo via plugin_path > /data/f")
	got, err := os.ReadFile(filepath.Join(root, "volumes", "default", "data", "_data", "f"))
	if err != nil || string(got) != "via plugin_path\n" {
		t.Errorf("volume file = %q, %v", got, err)
	}
}

// TestContainerdRestart checks that the external plugin reconnects after
// containerd restarts, and keeps serving new containers.
func TestContainerdRestart(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("before", "default", "uid-before", map[string]string{podKey: "- shared:/shared"})
	before := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(before, "echo before > /shared/f")

	synced := e.ctd.SyncCount("10-volumes")
	e.ctd.Restart(t)
	e.ctd.WaitSynced(t, "10-volumes", synced)
	if !e.plugin.Running() {
		t.Fatalf("the plugin exited when containerd restarted")
	}

	pod2 := e.cr.RunPod("after", "default", "uid-after", map[string]string{podKey: "- shared:/shared"})
	after := e.cr.RunContainer(pod2, "app", appImage, nil, nil)
	if got := e.cr.Exec(after, "cat", "/shared/f"); got != "before\n" {
		t.Errorf("after the restart /shared/f = %q", got)
	}
}
