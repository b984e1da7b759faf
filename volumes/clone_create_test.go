package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/volumes/copyup"
)

// TestCloneOfOnCreate: a volume made on first use with CloneOf is a reflink
// of the golden volume's snapshot, or of the golden volume at rest, on xfs;
// it is independent of its source, and an anonymous one goes with its pod.
// What cannot be done in O(1) is refused, naming the source, and leaves
// nothing.
func TestCloneOfOnCreate(t *testing.T) {
	requireLoop(t)
	s := openSizedAt(t, xfsRoot(t))
	if _, err := s.Create("default", "golden", CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("seed", []Request{{Namespace: "default", Name: "golden"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vols[0].Mountpoint, "fixture"), "golden data")
	if _, err := s.Snapshots().Create("default", "golden", "v1", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("ctr0", []Request{{Namespace: "default", Name: "busy",
		CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}}}, nil); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "golden@SNAP") {
		t.Errorf("cloneOf a golden volume in use: %v; want ErrInUse suggesting a snapshot", err)
	}
	if err := s.Release("seed"); err != nil {
		t.Fatal(err)
	}
	owner := &Owner{PodSandboxID: "pod1", Container: "app", Target: "/data"}
	got, _, err := s.Acquire("ctr1", []Request{
		{Namespace: "default", Name: "mine", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden", Snapshot: "v1"}}},
		{Namespace: "default", Owner: owner, CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range got {
		if v.Mountpoint != filepath.Join(s.dir, "default", v.Name, dataDir) {
			t.Errorf("clone %s: Mountpoint %q", v.Name, v.Mountpoint)
		}
		if v.Limit != 16<<20 || v.Backend != BackendImage {
			t.Errorf("clone %s: limit %d backend %q", v.Name, v.Limit, v.Backend)
		}
		if b, err := os.ReadFile(filepath.Join(v.Mountpoint, "fixture")); err != nil || string(b) != "golden data" {
			t.Errorf("clone %s holds %q, %v", v.Name, b, err)
		}
		writeFile(t, filepath.Join(v.Mountpoint, "fixture"), "changed by "+v.Name)
	}
	if err := s.Release("ctr1"); err != nil {
		t.Fatal(err)
	}
	if need, err := needsCopyUp(s.CopyUps().Status("default", "mine")); err != nil || need {
		t.Errorf("a clone needs copy-up: %v, %v", need, err)
	}
	vols, _, err = s.Acquire("check", []Request{{Namespace: "default", Name: "golden"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(vols[0].Mountpoint, "fixture")); string(b) != "golden data" {
		t.Errorf("writing the clones changed golden: %q", b)
	}
	if err := s.Release("check"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemovePodVolumes("pod1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("default", got[1].Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("the anonymous clone outlived its pod: %v", err)
	}

	// An anonymous volume of another pod of the namespace is no source.
	anonVols, _, err := s.Acquire("ctr9", []Request{{Namespace: "default", Owner: &Owner{PodSandboxID: "pod9", Container: "app", Target: "/x"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	anon := anonVols[0].Name
	if err := s.Release("ctr9"); err != nil {
		t.Fatal(err)
	}

	// Refusals name the source and leave nothing.
	for _, tc := range []struct {
		src   CloneSource
		class error
		words string
	}{
		{CloneSource{Volume: "nope"}, ErrNotFound, `no volume "nope"`},
		{CloneSource{Volume: anon}, ErrNotFound, `no named volume "` + anon + `"`},
		{CloneSource{Volume: "golden", Snapshot: "v9"}, ErrNotFound, `snapshot "v9"`},
	} {
		_, _, err := s.Acquire("bad", []Request{{Namespace: "default", Name: "bad", CreateOptions: CreateOptions{CloneOf: &tc.src}}}, nil)
		if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.words) || !strings.Contains(err.Error(), `cloneOf "`+tc.src.String()+`"`) {
			t.Errorf("cloneOf %s: %v; want %v naming it and %q", tc.src, err, tc.class, tc.words)
		}
		if _, err := s.Get("default", "bad"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a refused cloneOf %s left its volume: %v", tc.src, err)
		}
	}
	// What the released clones left in the trash is the reaper's.
	if err := s.ReapTrash(); err != nil {
		t.Fatal(err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check: %v, %v", probs, err)
	}
}

// TestCloneOfSizedWithoutReflinksCopies: on a host file system without
// reflinks (ext4), cloneOf a sized volume (or its snapshot) is no longer
// refused: the request makes a new sized volume of the source's size,
// marked clone-pending, and CopyUpClone, the hook's step, fills it with
// the source's tree, all or nothing within the copy-up limits. The golden
// volume is unchanged. (Until now this test asserted the refusal.)
func TestCloneOfSizedWithoutReflinksCopies(t *testing.T) {
	requireLoop(t)
	s := openSizedAt(t, t.TempDir())
	if _, err := s.Create("default", "golden", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	// Written through a container's use of it, then snapshotted in use.
	g, _, err := s.Acquire("writer", []Request{{Namespace: "default", Name: "golden"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(g[0].Mountpoint, "fixture"), "golden data")
	if err := os.MkdirAll(filepath.Join(g[0].Mountpoint, "dir"), 0o750); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(g[0].Mountpoint, "dir", "deep"), strings.Repeat("d", 10000))
	if _, err := s.Snapshots().Create("default", "golden", "s1", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(g[0].Mountpoint, "fixture"), "golden after s1")

	got, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "copy", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden", Snapshot: "s1"}}}}, nil)
	if err != nil {
		t.Fatalf("cloneOf a sized snapshot without reflinks: %v", err)
	}
	v := got[0]
	if v.ClonePending != "golden@s1" || v.Limit != 8<<20 || v.Backend != BackendImage {
		t.Fatalf("clone: ClonePending %q, size %d, backend %q; want golden@s1, 8 MiB, image", v.ClonePending, v.Limit, v.Backend)
	}
	if st, err := s.CopyUps().Status("default", "copy"); err != nil || !st.Needed {
		t.Errorf("clone before its copy: needs copy-up %v, %v", st.Needed, err)
	}
	if _, pending, err := s.CopyUps().FillClone("default", "copy", copyup.Options{MaxBytes: 100}); !pending || !errors.Is(err, copyup.ErrLimit) {
		t.Errorf("clone over the copy-up limit: pending %v, %v; want ErrLimit", pending, err)
	}
	if names, _ := os.ReadDir(v.Mountpoint); len(names) != 0 {
		t.Errorf("clone holds %d entries after a failed copy", len(names))
	}
	if v2, err := s.Get("default", "copy"); err != nil || v2.ClonePending != "golden@s1" {
		t.Errorf("clone after a failed copy: ClonePending %q, %v", v2.ClonePending, err)
	}
	stats, pending, err := s.CopyUps().FillClone("default", "copy", copyup.Options{})
	if !pending || err != nil || stats.Bytes < 10000 {
		t.Fatalf("CopyUpClone: pending %v, %+v, %v", pending, stats, err)
	}
	if b, err := os.ReadFile(filepath.Join(v.Mountpoint, "fixture")); err != nil || string(b) != "golden data" {
		t.Errorf("clone holds %q, %v; want the snapshot's data", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(v.Mountpoint, "dir", "deep")); err != nil || len(b) != 10000 {
		t.Errorf("clone: deep file %d bytes, %v", len(b), err)
	}
	writeFile(t, filepath.Join(v.Mountpoint, "fixture"), "changed by the clone")
	if v2, err := s.Get("default", "copy"); err != nil || v2.ClonePending != "" {
		t.Errorf("clone after its copy: ClonePending %q, %v", v2.ClonePending, err)
	}
	if b, _ := os.ReadFile(filepath.Join(g[0].Mountpoint, "fixture")); string(b) != "golden after s1" {
		t.Errorf("the clone changed golden: %q", b)
	}
	// With a format budget, as the plugin sets one, the clone's image is
	// formatted ahead, outside the lock, as any new sized volume's is.
	s.Reconfigure(WithFormatBudget(time.Minute))
	owner := &Owner{PodSandboxID: "pod1", Container: "app", Target: "/data"}
	anon, _, err := s.Acquire("ctr2", []Request{{Namespace: "default", Owner: owner, CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden", Snapshot: "s1"}}}}, nil)
	if err != nil {
		t.Fatalf("anonymous cloneOf with a format budget: %v", err)
	}
	if _, _, err := s.CopyUps().FillClone("default", anon[0].Name, copyup.Options{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(anon[0].Mountpoint, "fixture")); err != nil || string(b) != "golden data" {
		t.Errorf("anonymous clone holds %q, %v; want the snapshot's data", b, err)
	}
	for _, id := range []string{"ctr", "ctr2", "writer"} {
		if err := s.Release(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RemovePodVolumes("pod1"); err != nil {
		t.Fatal(err)
	}
	// The golden volume itself, at rest, copies too.
	rest, _, err := s.Acquire("ctr3", []Request{{Namespace: "default", Name: "copy2", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}}}, nil)
	if err != nil {
		t.Fatalf("cloneOf a sized volume at rest: %v", err)
	}
	if _, _, err := s.CopyUps().FillClone("default", "copy2", copyup.Options{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rest[0].Mountpoint, "fixture")); err != nil || string(b) != "golden after s1" {
		t.Errorf("clone of golden at rest holds %q, %v", b, err)
	}
	if err := s.Release("ctr3"); err != nil {
		t.Fatal(err)
	}
	// What the released volumes left in the trash is the reaper's.
	if err := s.ReapTrash(); err != nil {
		t.Fatal(err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check: %v, %v", probs, err)
	}
}
