package plugin_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/nri/pkg/api"

	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// hookArgs returns the arguments of the copy-up hook the plugin added, or
// nil when it added none.
func hookArgs(t *testing.T, adj *api.ContainerAdjustment) []string {
	t.Helper()
	hooks := adj.GetHooks().GetCreateRuntime()
	switch len(hooks) {
	case 0:
		return nil
	case 1:
		return hooks[0].Args
	}
	t.Fatalf("%d createRuntime hooks, want at most one: %+v", len(hooks), hooks)
	return nil
}

// TestCopyUpHookOnlyWithWork: the copy-up hook, a process on the path of
// the container's start, is added only for a volume that can still be
// filled, and it makes a new named volume durable before the container
// starts. A volume copied up once (even from nothing), one that holds data,
// and one mounted with nocopy get no hook.
func TestCopyUpHookOnlyWithWork(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	store := rt.store()
	ann := func(items string) map[string]string { return map[string]string{plugin.VolumesKey + "/pod": items} }

	adj, err := rt.create(newPod("p1", "default", ann("- fresh:/data\n- /anon")), newContainer("c1", "p1", "app"))
	if err != nil {
		t.Fatal(err)
	}
	args := hookArgs(t, adj)
	if !slices.Contains(args, "default/fresh=/data") || !slices.Contains(args, "--sync") || !slices.Contains(args, "default/fresh") {
		t.Fatalf("a new named volume: hook args %q, want its copy-up and --sync default/fresh", args)
	}
	if n := countArg(args, "--sync"); n != 1 {
		t.Errorf("hook args %q sync %d volumes, want only the named one (anonymous volumes are not made durable)", args, n)
	}

	// What the hook does when the image has nothing at /data.
	if err := store.CopyUp("default", "fresh", func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	adj, err = rt.create(newPod("p2", "default", ann("- fresh:/data")), newContainer("c2", "p2", "app"))
	if err != nil {
		t.Fatal(err)
	}
	if args := hookArgs(t, adj); args != nil {
		t.Errorf("a volume whose copy-up is done: hook %q, want none", args)
	}

	if _, err := store.Create("default", "used", volumes.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := store.Get("default", "used")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.Mountpoint, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	adj, err = rt.create(newPod("p3", "default", ann("- used:/data\n- other:/other:nocopy")), newContainer("c3", "p3", "app"))
	if err != nil {
		t.Fatal(err)
	}
	if args := hookArgs(t, adj); args != nil {
		t.Errorf("a volume with data and a new nocopy volume: hook %q, want none", args)
	}
	if _, err := store.Get("default", "other"); err != nil {
		t.Errorf("the new nocopy volume: %v", err)
	}
}

func countArg(args []string, arg string) int {
	n := 0
	for _, a := range args {
		if a == arg {
			n++
		}
	}
	return n
}
