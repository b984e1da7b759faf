package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	vols, err := s.Acquire("seed", []Request{{Namespace: "default", Name: "golden"}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vols[0].Mountpoint, "fixture"), "golden data")
	if _, err := s.CreateSnapshot("default", "golden", "v1", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire("ctr0", []Request{{Namespace: "default", Name: "busy",
		CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}}}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "golden@SNAP") {
		t.Errorf("cloneOf a golden volume in use: %v; want ErrInUse suggesting a snapshot", err)
	}
	if err := s.Release("seed"); err != nil {
		t.Fatal(err)
	}
	owner := &Owner{PodSandboxID: "pod1", Container: "app", Target: "/data"}
	got, err := s.Acquire("ctr1", []Request{
		{Namespace: "default", Name: "mine", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden", Snapshot: "v1"}}},
		{Namespace: "default", Owner: owner, CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}},
	})
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
	if need, err := needsCopyUp(s.CopyUpStatus("default", "mine")); err != nil || need {
		t.Errorf("a clone needs copy-up: %v, %v", need, err)
	}
	vols, err = s.Acquire("check", []Request{{Namespace: "default", Name: "golden"}})
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
	anonVols, err := s.Acquire("ctr9", []Request{{Namespace: "default", Owner: &Owner{PodSandboxID: "pod9", Container: "app", Target: "/x"}}})
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
		_, err := s.Acquire("bad", []Request{{Namespace: "default", Name: "bad", CreateOptions: CreateOptions{CloneOf: &tc.src}}})
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

// TestCloneOfNeedsReflinks: on a host file system without reflinks (ext4),
// cloneOf is refused inside the request, with what to do instead.
func TestCloneOfNeedsReflinks(t *testing.T) {
	requireLoop(t)
	s := openSizedAt(t, t.TempDir())
	if _, err := s.Create("default", "golden", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "copy", CreateOptions: CreateOptions{CloneOf: &CloneSource{Volume: "golden"}}}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "reflinks") || !strings.Contains(err.Error(), "volume clone") {
		t.Fatalf("cloneOf without reflinks: %v", err)
	}
	if _, err := s.Get("default", "copy"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused clone was left: %v", err)
	}
	// What the released clones left in the trash is the reaper's.
	if err := s.ReapTrash(); err != nil {
		t.Fatal(err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check: %v, %v", probs, err)
	}
}
