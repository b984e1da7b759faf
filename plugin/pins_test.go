package plugin_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "pins are mounts, which need root")
}

// TestPinLifecycle follows the pins of bind sources and subpaths through
// NRI: made at CreateContainer and given to the runtime instead of the
// annotation's path, gone with a failed creation and with RemoveContainer,
// and the host's data untouched throughout.
func TestPinLifecycle(t *testing.T) {
	requireRoot(t)
	allowed := t.TempDir()
	for _, f := range []string{"a/file", "b/file"} {
		writeTestFile(t, filepath.Join(allowed, f), f)
	}
	rt := newRuntime(t, func(c *config.Config) { c.BindMounts.AllowedHostPaths = []string{allowed} })
	rt.connect()
	store := rt.store()
	v, err := store.Create("default", "data", volumes.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(v.Mountpoint, "logs", "app", "f"), "log")
	before := fstree.Snapshot(t, allowed)
	pins := filepath.Join(rt.cfg.Root, "pins")
	key := plugin.VolumesKey + "/pod"
	pod := newPod("p1", "default", map[string]string{key: "- " + allowed + "/a:/a\n- {source: data, target: /logs, subpath: logs/app}"})

	adj, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err != nil {
		t.Fatal(err)
	}
	a, logs := findMount(adj, "/a"), findMount(adj, "/logs")
	if a == nil || logs == nil || !strings.HasPrefix(a.Source, resolved(t, pins)+"/c1/") || !strings.HasPrefix(logs.Source, resolved(t, pins)+"/c1/") {
		t.Fatalf("mounts %+v, want both from pins of c1", adj.GetMounts())
	}
	if !sameFile(t, a.Source, filepath.Join(allowed, "a")) || !sameFile(t, logs.Source, filepath.Join(v.Mountpoint, "logs", "app")) {
		t.Errorf("the pins do not show %s/a and the volume's logs/app", allowed)
	}
	if got, err := store.Get("default", "data"); err != nil || !slices.Equal(got.UsedBy, []string{"c1"}) {
		t.Errorf("data = %+v, %v; want used by c1", got, err)
	}

	// A creation that fails on its last item leaves no pin of its first.
	for i, value := range []string{
		"- " + allowed + "/b:/b\n- " + allowed + "/missing:/m",
		"- " + allowed + "/b:/b\n- {source: data, target: /logs, subpath: logs/missing}",
	} {
		bad := newPod("p2", "default", map[string]string{key: value})
		id := "bad" + string(rune('0'+i))
		_, err := rt.create(bad, newContainer(id, "p2", "app"))
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "item 2") {
			t.Errorf("CreateContainer with %q = %v, want an error naming %s and item 2", value, err, key)
		}
		if _, err := os.Lstat(filepath.Join(pins, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pins of the failed container %s: %v", id, err)
		}
	}

	if err := rt.nri.RemoveContainer(context.Background(), &adaptation.RemoveContainerRequest{Pod: pod, Container: newContainer("c1", "p1", "app")}); err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(pins); err != nil || len(entries) != 0 {
		t.Errorf("pins after RemoveContainer: %v, %v", entries, err)
	}
	if after := fstree.Snapshot(t, allowed); !maps.Equal(before, after) {
		t.Errorf("the allowed directory changed: %v -> %v", before, after)
	}
	if got, err := os.ReadFile(filepath.Join(v.Mountpoint, "logs", "app", "f")); err != nil || string(got) != "log" {
		t.Errorf("the volume's subpath lost its data: %q, %v", got, err)
	}
}

// TestSynchronizePins checks a plugin restart: the pins of containers that
// are gone are removed, those of live ones kept, and a volume a live
// container uses only through a subpath still counts as used.
func TestSynchronizePins(t *testing.T) {
	requireRoot(t)
	allowed := t.TempDir()
	writeTestFile(t, filepath.Join(allowed, "a", "file"), "a")
	rt := newRuntime(t, func(c *config.Config) { c.BindMounts.AllowedHostPaths = []string{allowed} })
	store := rt.store()
	v, err := store.Create("default", "data", volumes.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(v.Mountpoint, "logs", "f"), "log")
	_, subPins, err := store.Acquire("alive", []volumes.Request{{Namespace: "default", Name: "data"}},
		[]volumes.Subpath{{Namespace: "default", Name: "data", Path: "logs", Pin: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alive", "gone"} {
		d, err := os.Open(allowed)
		if err != nil {
			t.Fatal(err)
		}
		f, err := volumes.OpenPathBeneath(d, "a")
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, err = store.Pins().HostPath(id, 0, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	rt.pods = []*api.PodSandbox{newPod("p1", "default", nil)}
	alive := newContainer("alive", "p1", "app")
	alive.Mounts = []*api.Mount{{Destination: "/logs", Type: "bind", Source: subPins[0]}}
	rt.ctrs = []*api.Container{alive}
	rt.connect()

	pins := filepath.Join(rt.cfg.Root, "pins")
	if _, err := os.Lstat(filepath.Join(pins, "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pins of a container that is gone survived Synchronize: %v", err)
	}
	for _, p := range []string{filepath.Join(pins, "alive", "0", "file"), filepath.Join(subPins[0], "f")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("a pin of a live container went: %v", err)
		}
	}
	if got, err := store.Get("default", "data"); err != nil || !slices.Equal(got.UsedBy, []string{"alive"}) {
		t.Errorf("data after Synchronize = %+v, %v; want used by alive through its subpath", got, err)
	}
	if err := store.Remove("default", "data"); !errors.Is(err, volumes.ErrInUse) {
		t.Errorf("Remove of a volume in use through a subpath = %v, want ErrInUse", err)
	}
}

func resolved(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
