package plugin_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	if err := store.CopyUps().Copy("default", "fresh", func(string) error { return nil }); err != nil {
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

// TestNoHookForKnownEmptyImageTargets: once the store records that image D
// has nothing to copy at /anon and /named, a container of D gets no hook for
// new volumes there, and its new named volume is durable when
// StartContainer returns, without the hook's sync. A container of another
// image, or one whose runtime sent no digest, still gets the hook, and so
// does a volume mounted with U, for the chown only.
func TestNoHookForKnownEmptyImageTargets(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	store := rt.store()
	digest := rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{}}`)
	other := rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{"User":"other"}}`)
	ann := func(items string) map[string]string { return map[string]string{plugin.VolumesKey + "/pod": items} }
	ctrOf := func(id, pod, image string) *api.Container {
		c := newContainer(id, pod, "app")
		c.Image = &api.Image{Name: "localhost/app:e2e", ConfigDigest: image}
		return c
	}

	adj, err := rt.create(newPod("p1", "default", ann("- first:/named\n- /anon")), ctrOf("c1", "p1", digest))
	if err != nil {
		t.Fatal(err)
	}
	args := hookArgs(t, adj)
	if !slices.Contains(args, "default/first=/named") || countArg(args, "--volume") != 2 {
		t.Fatalf("the first container of the image: hook args %q, want both copy-ups", args)
	}
	if i := slices.Index(args, "--image"); i < 0 || i+1 >= len(args) || args[i+1] != digest {
		t.Errorf("hook args %q, want --image %s", args, digest)
	}

	// What the hook records when the image has nothing at either target.
	digestHex := strings.TrimPrefix(digest, "sha256:")
	for _, target := range []string{"/anon", "/named"} {
		if err := store.EmptyTargets().Record(digestHex, target); err != nil {
			t.Fatal(err)
		}
	}
	adj, err = rt.create(newPod("p2", "default", ann("- second:/named\n- /anon")), ctrOf("c2", "p2", digest))
	if err != nil {
		t.Fatal(err)
	}
	if args := hookArgs(t, adj); args != nil {
		t.Errorf("a container of an image known to have nothing there: hook %q, want none", args)
	}
	if findMount(adj, "/named") == nil || findMount(adj, "/anon") == nil {
		t.Fatalf("volumes not mounted: %+v", adj.GetMounts())
	}
	if err := rt.start(newPod("p2", "default", nil), ctrOf("c2", "p2", digest), adj); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	volDir := filepath.Join(rt.cfg.Root, "volumes", "default", "second")
	if _, err := os.Stat(filepath.Join(volDir, "sync-pending")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the new named volume is not durable when StartContainer returns: sync-pending %v", err)
	}
	// Left as any new volume: a container of an image with content there
	// still fills it.
	if need, err := needsCopyUp(store.CopyUps().Status("default", "second")); err != nil || !need {
		t.Errorf("the new named volume needs copy-up: %t, %v; want true", need, err)
	}

	for _, tc := range []struct{ name, image string }{{"another image", other}, {"no digest", ""}} {
		pod := "p-" + strings.ReplaceAll(tc.name, " ", "-")
		adj, err := rt.create(newPod(pod, "default", ann("- /anon")), ctrOf("c-"+pod, pod, tc.image))
		if err != nil {
			t.Fatal(err)
		}
		args := hookArgs(t, adj)
		if countArg(args, "--volume") != 1 {
			t.Errorf("%s: hook args %q, want the copy-up of /anon", tc.name, args)
		}
		if want := tc.image != ""; slices.Contains(args, "--image") != want {
			t.Errorf("%s: hook args %q, want --image: %t", tc.name, args, want)
		}
	}

	adj, err = rt.create(newPod("p3", "default", ann("- third:/named:U")), ctrOf("c3", "p3", digest))
	if err != nil {
		t.Fatal(err)
	}
	args = hookArgs(t, adj)
	if !slices.Contains(args, "default/third") || slices.Contains(args, "--volume") || slices.Contains(args, "--sync") {
		t.Errorf("U on a known-empty target: hook args %q, want --chown default/third only", args)
	}
}

// TestGoneImagesLoseEmptyTargets: after Synchronize, the records of images
// whose config blob left containerd's content store are removed, and the
// others kept.
func TestGoneImagesLoseEmptyTargets(t *testing.T) {
	rt := newRuntime(t, nil)
	kept := strings.TrimPrefix(rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{}}`), "sha256:")
	gone := strings.TrimPrefix(rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{"User":"gone"}}`), "sha256:")
	store := rt.store()
	for _, h := range []string{kept, gone} {
		if err := store.EmptyTargets().Record(h, "/data"); err != nil {
			t.Fatal(err)
		}
	}
	blobs := filepath.Join(rt.cfg.ContainerdRoot, "io.containerd.content.v1.content", "blobs", "sha256")
	if err := os.Remove(filepath.Join(blobs, gone)); err != nil {
		t.Fatal(err)
	}
	rt.connect()
	if !eventually(func() bool { empty, _ := store.EmptyTargets().Has(gone, "/data"); return !empty }) {
		t.Fatal("the record of a removed image survived Synchronize")
	}
	if empty, err := store.EmptyTargets().Has(kept, "/data"); err != nil || !empty {
		t.Errorf("the record of an image still there: %t, %v; want kept", empty, err)
	}
}

// runtimeWithEmptyTarget is a connected runtime whose store has recorded,
// as the hook does, that the image of the returned config digest has
// nothing at target.
func runtimeWithEmptyTarget(t *testing.T, target string) (*runtime, *volumes.Store, string) {
	t.Helper()
	rt := newRuntime(t, nil)
	rt.connect()
	store := rt.store()
	digest := rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{}}`)
	if err := store.EmptyTargets().Record(strings.TrimPrefix(digest, "sha256:"), target); err != nil {
		t.Fatal(err)
	}
	return rt, store, digest
}

// TestKnownEmptyTargetStillResetsAnEarlierVolumesRoot: an image known to
// have nothing at /data may have the bare mount point runc makes there,
// whose copy gives the volume's root root:root 0755, as Docker's does. A
// volume that existed before, still waiting for its copy-up but whose root
// another container changed (here to 0700, as one mounting it with nocopy
// may), must still get the hook: skipping it leaves the root as it is.
func TestKnownEmptyTargetStillResetsAnEarlierVolumesRoot(t *testing.T) {
	rt, store, digest := runtimeWithEmptyTarget(t, "/data")
	if _, err := store.Create("default", "earlier", volumes.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := store.Get("default", "earlier")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(v.Mountpoint, 0o700); err != nil {
		t.Fatal(err)
	}
	ctr := newContainer("c1", "p1", "app")
	ctr.Image = &api.Image{Name: "localhost/app:e2e", ConfigDigest: digest}
	adj, err := rt.create(newPod("p1", "default", map[string]string{plugin.VolumesKey + "/pod": "- earlier:/data"}), ctr)
	if err != nil {
		t.Fatal(err)
	}
	if args := hookArgs(t, adj); !slices.Contains(args, "default/earlier=/data") {
		t.Errorf("an earlier volume with root 0700 at a known-empty target: hook args %q, want its copy-up, which gives the root 0755", args)
	}
}

// TestKnownEmptyTargetStillFinishesACutShortCopy: a volume whose copy-up
// from another image was cut short (its marker left, the copy half moved
// into _data) needs the hook to finish or throw away that copy, even where
// this container's image is known to have nothing: skipping it starts the
// container on a half-filled volume.
func TestKnownEmptyTargetStillFinishesACutShortCopy(t *testing.T) {
	rt, store, digest := runtimeWithEmptyTarget(t, "/data")
	for _, marker := range []string{"copyup-started", "copyup-switching"} {
		name := strings.TrimPrefix(marker, "copyup-")
		if _, err := store.Create("default", name, volumes.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		volDir := filepath.Join(rt.cfg.Root, "volumes", "default", name)
		if err := os.WriteFile(filepath.Join(volDir, marker), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		ctr := newContainer("c-"+name, "p-"+name, "app")
		ctr.Image = &api.Image{Name: "localhost/app:e2e", ConfigDigest: digest}
		adj, err := rt.create(newPod("p-"+name, "default", map[string]string{plugin.VolumesKey + "/pod": "- " + name + ":/data"}), ctr)
		if err != nil {
			t.Fatal(err)
		}
		if args := hookArgs(t, adj); !slices.Contains(args, "default/"+name+"=/data") {
			t.Errorf("a volume left with %s at a known-empty target: hook args %q, want its copy-up", marker, args)
		}
	}
}

// needsCopyUp reports whether a container that mounts the volume needs the
// copy-up hook, for tests that ask only that of CopyUpStatus.
func needsCopyUp(st volumes.CopyUpStatus, err error) (bool, error) { return st.Needed, err }
