package plugin_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/nri/pkg/adaptation"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// loopXFS makes an xfs with reflinks in a loop file, mounted until the test
// ends, and returns its mount point.
func loopXFS(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t, "needs root")
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("no mkfs.xfs (xfsprogs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<30); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		fsx.UnmountUnder(filepath.Join(mnt, "store"))
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	})
	return mnt
}

// goldenVolume makes the sized volume golden with a file fixture, and its
// snapshot v1, through the store.
func goldenVolume(t *testing.T, s *volumes.Store) {
	t.Helper()
	if _, err := s.Create("ci", "golden", volumes.CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("seed", []volumes.Request{{Namespace: "ci", Name: "golden"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, "fixture"), []byte("golden"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshots().Create("ci", "golden", "v1", volumes.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("seed"); err != nil {
		t.Fatal(err)
	}
}

// TestCloneOfThroughNRI: a pod with cloneOf gets a named and an anonymous
// clone of the golden volume made inside CreateContainer on a store on xfs;
// it writes them without changing golden, and the anonymous clone goes with
// the pod.
func TestCloneOfThroughNRI(t *testing.T) {
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	mnt := loopXFS(t)
	rt := newRuntime(t, func(c *config.Config) {
		c.Root = filepath.Join(mnt, "store")
		c.Sizes = config.Sizes{Backend: "image", MaxSize: 64 << 20}
	})
	goldenVolume(t, rt.store())
	rt.connect()
	pod := newPod("p1", "ci", map[string]string{plugin.VolumesKey: "- {source: ci-db, target: /db, cloneOf: golden@v1}\n- {target: /scratch, cloneOf: golden}"})
	ctr := newContainer("c1", "p1", "app")
	adj, err := rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"/db", "/scratch"} {
		m := findMount(adj, dst)
		if m == nil {
			t.Fatalf("no mount at %s", dst)
		}
		if b, err := os.ReadFile(filepath.Join(m.Source, "fixture")); err != nil || string(b) != "golden" {
			t.Errorf("%s holds %q, %v; want the golden data", dst, b, err)
		}
		if err := os.WriteFile(filepath.Join(m.Source, "fixture"), []byte("pod's"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.nri.RemoveContainer(context.Background(), &adaptation.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
		t.Fatal(err)
	}
	if err := rt.nri.RemovePodSandbox(context.Background(), &adaptation.RemovePodSandboxRequest{Pod: pod}); err != nil {
		t.Fatal(err)
	}
	s := rt.store()
	vols, err := s.List(volumes.ListOptions{Namespace: "ci"})
	if err != nil || len(vols) != 2 || vols[0].Name != "ci-db" || vols[1].Name != "golden" {
		t.Fatalf("after the pod: %v, %v; want ci-db and golden, the anonymous clone gone", vols, err)
	}
	res, err := s.Clone("ci", "golden", "", "check", volumes.CloneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Acquire("reader", []volumes.Request{{Namespace: "ci", Name: res.Volume.Name}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(got[0].Mountpoint, "fixture")); string(b) != "golden" {
		t.Errorf("the pod's writes changed golden: %q", b)
	}
	if err := s.Release("reader"); err != nil {
		t.Fatal(err)
	}
}

// TestCloneOfSizedWithoutReflinksThroughNRI: on a store without reflinks,
// cloneOf a sized volume's snapshot makes, inside CreateContainer, a new
// sized volume of the source's size still to copy, and gives the container
// the copy-up hook that fills it outside the request. (Until now this test
// asserted a refusal.)
func TestCloneOfSizedWithoutReflinksThroughNRI(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	rt := newRuntime(t, func(c *config.Config) { c.Sizes = config.Sizes{Backend: "image", MaxSize: 64 << 20} })
	t.Cleanup(func() { fsx.UnmountUnder(rt.cfg.Root) })
	goldenVolume(t, rt.store())
	rt.connect()
	pod := newPod("p1", "ci", map[string]string{plugin.VolumesKey: "- {source: ci-db, target: /db, cloneOf: golden@v1}"})
	adj, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if args := hookArgs(t, adj); !slices.Contains(args, "ci/ci-db=/db") {
		t.Errorf("hook args %v: want the clone's copy-up", args)
	}
	v, err := rt.store().Get("ci", "ci-db")
	if err != nil || v.ClonePending != "golden@v1" || v.Limit != 16<<20 {
		t.Errorf("ci-db after CreateContainer: %+v, %v; want a 16 MiB clone of golden@v1 still to copy", v, err)
	}
}

// TestCloneOfPlainThroughNRI: cloneOf a plain volume (or a snapshot of one)
// makes the clone empty inside CreateContainer and gives the container the
// copy-up hook for it, with the pod's copy-up budget, so the copy runs
// outside the request and before the container starts; the image's content
// there is never adopted into it.
func TestCloneOfPlainThroughNRI(t *testing.T) {
	rt := newRuntime(t, func(c *config.Config) { c.Limits.CopyUpMaxSizePerPod = 1 << 20 })
	s := rt.store()
	golden, err := s.Create("ci", "golden", volumes.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(golden.Mountpoint, "fixture"), []byte("golden"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshots().Create("ci", "golden", "v1", volumes.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	rt.connect()
	pod := newPod("p1", "ci", map[string]string{plugin.VolumesKey: "- {source: ci-db, target: /db, cloneOf: golden@v1}\n- {target: /scratch, cloneOf: golden}"})
	adj, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err != nil {
		t.Fatal(err)
	}
	args := hookArgs(t, adj)
	if !slices.Contains(args, "ci/ci-db=/db") || countArg(args, "--volume") != 2 {
		t.Errorf("hook args %v: want the copy-ups of both clones", args)
	}
	if i := slices.Index(args, "--pod"); i < 0 || args[i+1] != "p1" {
		t.Errorf("hook args %v: want the pod's copy-up budget", args)
	}
	v, err := s.Get("ci", "ci-db")
	if err != nil || v.ClonePending != "golden@v1" {
		t.Errorf("ci-db after CreateContainer: %+v, %v; want a clone of golden@v1 still to copy", v, err)
	}
	// A second container of the pod, made before the first started, finds
	// the clone still to copy and gets the hook too.
	adj, err = rt.create(pod, newContainer("c2", "p1", "side"))
	if err != nil {
		t.Fatal(err)
	}
	if hooks := adj.GetHooks().GetCreateRuntime(); len(hooks) != 1 || !slices.Contains(hooks[0].Args, "ci/ci-db=/db") {
		t.Errorf("second container's hooks %+v: want the clone's copy-up", hooks)
	}
}
