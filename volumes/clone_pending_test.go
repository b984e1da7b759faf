package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/volumes/copyup"
)

// TestCloneOfPlainCopiesOutsideRequest: cloneOf a plain volume, or a
// snapshot of one, is made at once as an empty volume that needs copy-up;
// CopyUpClone, the hook's step, then fills it from its source, all or
// nothing within the copy-up limits, and the clone is independent of its
// source. A plain source in use without a snapshot is refused.
func TestCloneOfPlainCopiesOutsideRequest(t *testing.T) {
	s, _ := newStore(t)
	golden, err := s.Create("default", "golden", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(golden.Mountpoint, "fixture"), "golden data")
	if err := os.MkdirAll(filepath.Join(golden.Mountpoint, "dir", "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(golden.Mountpoint, "dir", "sub", "deep"), strings.Repeat("d", 10000))
	if _, err := s.Snapshots().Create("default", "golden", "v1", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(golden.Mountpoint, "fixture"), "golden after v1")

	owner := &Owner{PodSandboxID: "pod1", Container: "app", Target: "/data"}
	got, _, err := s.Acquire("ctr1", []Request{
		{Namespace: "default", Name: "mine", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden", Snapshot: "v1"}}},
		{Namespace: "default", Owner: owner, CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"mine": "golden data", got[1].Name: "golden after v1"}
	for i, v := range got {
		src := []string{"golden@v1", "golden"}[i]
		if v.ClonePending != src {
			t.Errorf("clone %s: ClonePending %q, want %q", v.Name, v.ClonePending, src)
		}
		if st, err := s.CopyUps().Status("default", v.Name); err != nil || !st.Needed {
			t.Errorf("clone %s before its copy: needs copy-up %v, %v", v.Name, st.Needed, err)
		}
		// A copy over the limits fails and leaves the clone empty, to be
		// copied again.
		if _, pending, err := s.CopyUps().FillClone("default", v.Name, copyup.Options{MaxBytes: 100}); !pending || !errors.Is(err, copyup.ErrLimit) {
			t.Errorf("clone %s over the copy-up limit: pending %v, %v; want ErrLimit", v.Name, pending, err)
		}
		if names, _ := os.ReadDir(v.Mountpoint); len(names) != 0 {
			t.Errorf("clone %s holds %d entries after a failed copy", v.Name, len(names))
		}
		stats, pending, err := s.CopyUps().FillClone("default", v.Name, copyup.Options{})
		if !pending || err != nil || stats.Bytes < 10000 {
			t.Fatalf("clone %s: CopyUpClone: pending %v, %+v, %v", v.Name, pending, stats, err)
		}
		if b, err := os.ReadFile(filepath.Join(v.Mountpoint, "fixture")); err != nil || string(b) != want[v.Name] {
			t.Errorf("clone %s holds %q, %v; want %q", v.Name, b, err, want[v.Name])
		}
		if b, err := os.ReadFile(filepath.Join(v.Mountpoint, "dir", "sub", "deep")); err != nil || len(b) != 10000 {
			t.Errorf("clone %s: deep file %d bytes, %v", v.Name, len(b), err)
		}
		if st, err := os.Stat(filepath.Join(v.Mountpoint, "dir")); err != nil || st.Mode().Perm() != 0o750 {
			t.Errorf("clone %s: dir mode %v, %v", v.Name, st.Mode(), err)
		}
		writeFile(t, filepath.Join(v.Mountpoint, "fixture"), "changed by "+v.Name)
		if _, pending, err := s.CopyUps().FillClone("default", v.Name, copyup.Options{}); pending || err != nil {
			t.Errorf("clone %s copied twice: pending %v, %v", v.Name, pending, err)
		}
		if need, err := needsCopyUp(s.CopyUps().Status("default", v.Name)); err != nil || need {
			t.Errorf("clone %s after its copy: needs copy-up %v, %v", v.Name, need, err)
		}
		if v2, err := s.Get("default", v.Name); err != nil || v2.ClonePending != "" {
			t.Errorf("clone %s after its copy: ClonePending %q, %v", v.Name, v2.ClonePending, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(golden.Mountpoint, "fixture")); string(b) != "golden after v1" {
		t.Errorf("writing the clones changed golden: %q", b)
	}

	// A plain source in use copies only from a snapshot.
	if _, _, err := s.Acquire("user", []Request{{Namespace: "default", Name: "golden"}}, nil); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Acquire("ctr2", []Request{{Namespace: "default", Name: "bad", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}}}, nil)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), `cloneOf "golden"`) || !strings.Contains(err.Error(), "golden@SNAP") {
		t.Errorf("cloneOf a plain volume in use: %v; want ErrInUse suggesting a snapshot", err)
	}
	if _, err := s.Get("default", "bad"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused clone was left: %v", err)
	}
	if err := s.Release("user"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("ctr1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemovePodVolumes("pod1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReapTrash(); err != nil {
		t.Fatal(err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check: %v, %v", probs, err)
	}
}

// TestCloneOfPlainIsCounted: the pending clone of a plain volume is in the
// namespace counts the metrics read, like any volume made in the store.
func TestCloneOfPlainIsCounted(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Create("default", "golden", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stats().Namespaces(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("ctr1", []Request{
		{Namespace: "default", Name: "mine", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}},
	}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := s.Stats().Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if c["default"].Named != 2 {
		t.Errorf("Named = %d after a pending clone, want 2", c["default"].Named)
	}
}
