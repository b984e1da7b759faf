package plugin_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/plugin"
)

// runtimeImageVolume makes what containerd makes for an image's VOLUME
// before it asks NRI plugins: a copy of the image's content below its root,
// mounted at target. It returns the mount and the copy's directory.
func runtimeImageVolume(t *testing.T, rt *runtime, ctrID, target string, files map[string]string) (*api.Mount, string) {
	t.Helper()
	dir := filepath.Join(rt.cfg.ContainerdRoot, "io.containerd.grpc.v1.cri", "containers", ctrID, "volumes",
		strings.Repeat("ab", 32))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(dir, 999, 999); err != nil {
		t.Fatal(err)
	}
	return &api.Mount{Destination: target, Type: "bind", Options: []string{"rbind", "rprivate"}, Source: dir}, dir
}

func hexID(c byte) string { return strings.Repeat(string(c), 64) }

// TestImageVolumeAdoptsRuntimeCopy: when containerd has copied the image's
// VOLUME already, the container's new anonymous volume takes that copy over
// and the container gets no copy-up hook; a restart of the container in the
// pod finds the volume as the first one left it.
func TestImageVolumeAdoptsRuntimeCopy(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	pod := newPod("p1", "default", nil)
	ctr := newContainer(hexID('1'), "p1", "app")
	m, dir := runtimeImageVolume(t, rt, ctr.Id, "/data", map[string]string{"seed.txt": "from the image"})
	ctr.Mounts = []*api.Mount{m}
	adj, err := rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	if hooks := adj.GetHooks().GetCreateRuntime(); len(hooks) != 0 {
		t.Fatalf("createRuntime hooks = %+v, want none: containerd's copy is adopted", hooks)
	}
	vol := findMount(adj, "/data")
	if vol == nil || vol.Source == dir {
		t.Fatalf("mount at /data = %+v, want the volume's", vol)
	}
	data, err := os.ReadFile(filepath.Join(vol.Source, "seed.txt"))
	if err != nil || string(data) != "from the image" {
		t.Fatalf("volume's seed.txt = %q, %v", data, err)
	}
	if st, err := os.Stat(vol.Source); err != nil || st.Sys().(*syscall.Stat_t).Uid != 999 {
		t.Errorf("volume's root: %+v, %v; want it owned by the image's 999", st, err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("containerd's directory holds %v (%v), want it empty", entries, err)
	}

	// The container restarts: containerd copies again, the volume is kept.
	restarted := newContainer(hexID('2'), "p1", "app")
	m2, _ := runtimeImageVolume(t, rt, restarted.Id, "/data", map[string]string{"seed.txt": "again"})
	restarted.Mounts = []*api.Mount{m2}
	if err := os.WriteFile(filepath.Join(vol.Source, "seed.txt"), []byte("written by the app"), 0o644); err != nil {
		t.Fatal(err)
	}
	adj, err = rt.create(pod, restarted)
	if err != nil {
		t.Fatal(err)
	}
	if got := findMount(adj, "/data"); got == nil || got.Source != vol.Source {
		t.Fatalf("restarted container's /data = %+v, want the same volume %s", got, vol.Source)
	}
	if hooks := adj.GetHooks().GetCreateRuntime(); len(hooks) != 0 {
		t.Errorf("restarted container got hooks %+v, want none", hooks)
	}
	if data, _ := os.ReadFile(filepath.Join(vol.Source, "seed.txt")); string(data) != "written by the app" {
		t.Errorf("after the restart seed.txt = %q, want what the app wrote", data)
	}
}

// TestImageVolumeAdoptionDeclined: the hook copies as before when the copy
// is not containerd's for this very container, when the container has a
// user namespace, or when the copy is over the copy-up limits.
func TestImageVolumeAdoptionDeclined(t *testing.T) {
	cases := map[string]struct {
		mutate func(*config.Config)
		ctr    func(t *testing.T, rt *runtime) *api.Container
	}{
		"another container's copy": {ctr: func(t *testing.T, rt *runtime) *api.Container {
			ctr := newContainer(hexID('1'), "p1", "app")
			m, _ := runtimeImageVolume(t, rt, hexID('9'), "/data", map[string]string{"f": "x"})
			// The mount names this container's directory in the path
			// containerd's check looks at, but another one's copy.
			m.Source = strings.Replace(m.Source, hexID('9'), hexID('1')+"/volumes/../../"+hexID('9'), 1)
			ctr.Mounts = []*api.Mount{m}
			return ctr
		}},
		"user namespace": {ctr: func(t *testing.T, rt *runtime) *api.Container {
			ctr := newContainer(hexID('1'), "p1", "app")
			m, _ := runtimeImageVolume(t, rt, ctr.Id, "/data", map[string]string{"f": "x"})
			ctr.Mounts = []*api.Mount{m}
			ctr.Linux = &api.LinuxContainer{Namespaces: []*api.LinuxNamespace{{Type: "user"}}}
			return ctr
		}},
		"over copyUpMaxFiles": {
			mutate: func(c *config.Config) { c.Limits.CopyUpMaxFiles = 1 },
			ctr: func(t *testing.T, rt *runtime) *api.Container {
				ctr := newContainer(hexID('1'), "p1", "app")
				m, _ := runtimeImageVolume(t, rt, ctr.Id, "/data", map[string]string{"f": "x", "g": "y"})
				ctr.Mounts = []*api.Mount{m}
				return ctr
			}},
		"over the pod's copy-up budget": {
			mutate: func(c *config.Config) { c.Limits.CopyUpMaxSizePerPod = 1 },
			ctr: func(t *testing.T, rt *runtime) *api.Container {
				ctr := newContainer(hexID('1'), "p1", "app")
				m, _ := runtimeImageVolume(t, rt, ctr.Id, "/data", map[string]string{"f": "xy"})
				ctr.Mounts = []*api.Mount{m}
				return ctr
			}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rt := newRuntime(t, tc.mutate)
			rt.connect()
			ctr := tc.ctr(t, rt)
			adj, err := rt.create(newPod("p1", "default", nil), ctr)
			if err != nil {
				t.Fatal(err)
			}
			hooks := adj.GetHooks().GetCreateRuntime()
			if len(hooks) != 1 || !strings.Contains(strings.Join(hooks[0].Args, " "), "=/data") {
				t.Fatalf("createRuntime hooks = %+v, want the copy-up hook for /data", hooks)
			}
			vol := findMount(adj, "/data")
			if entries, err := os.ReadDir(vol.Source); err != nil || len(entries) != 0 {
				t.Errorf("volume holds %v (%v) before its hook ran, want it empty", entries, err)
			}
		})
	}
}

// TestNamedVolumeLeavesRuntimeCopy: a new named volume that an annotation
// puts where the image declares a VOLUME is filled by the hook, in place:
// another pod may get its path before an exchange could happen.
func TestNamedVolumeLeavesRuntimeCopy(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	pod := newPod("p1", "default", map[string]string{plugin.VolumesKey + "/pod": "- redis-data:/data"})
	ctr := newContainer(hexID('1'), "p1", "app")
	m, dir := runtimeImageVolume(t, rt, ctr.Id, "/data", map[string]string{"seed.txt": "from the image"})
	ctr.Mounts = []*api.Mount{m}
	adj, err := rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	hooks := adj.GetHooks().GetCreateRuntime()
	if len(hooks) != 1 || !strings.Contains(strings.Join(hooks[0].Args, " "), "default/redis-data=/data") {
		t.Fatalf("createRuntime hooks = %+v, want the copy-up of default/redis-data", hooks)
	}
	if _, err := os.Stat(filepath.Join(dir, "seed.txt")); err != nil {
		t.Errorf("containerd's copy was touched: %v", err)
	}
}
