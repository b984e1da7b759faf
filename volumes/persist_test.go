package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestPersistLater: a named volume that Acquire makes for a Request with
// PersistLater says so (PersistLater) and is whole at once; Persist then makes it
// durable. An existing volume and an anonymous one never come back
// PersistLater: the caller has nothing to sync.
func TestPersistLater(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	owner := &Owner{PodSandboxID: "pod1", Container: "app", Target: "/anon"}
	vols, _, err := s.Acquire("ctr1", []Request{{Namespace: "default", Name: "fresh", PersistLater: true}, {Namespace: "default", Owner: owner, PersistLater: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !vols[0].PersistLater || vols[1].PersistLater {
		t.Fatalf("PersistLater = %v (named), %v (anonymous); want true, false", vols[0].PersistLater, vols[1].PersistLater)
	}
	pending := filepath.Join(s.root, volumesDir, "default", "fresh", syncPending)
	if _, err := os.Stat(pending); err != nil {
		t.Fatalf("an unsynced volume has no %s: %v", syncPending, err)
	}
	for i := 0; i < 2; i++ { // the plugin's Persist, then the hook's
		if err := s.CopyUps().Persist("default", "fresh"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(pending); !os.IsNotExist(err) {
			t.Fatalf("after Persist: %s is still there (%v)", syncPending, err)
		}
	}
	// Whole at once, to this process and to a new one.
	reopened, err := Open(s.root)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if v, err := reopened.Get("default", "fresh"); err != nil || v.Anonymous {
		t.Fatalf("Get after reopening = %+v, %v", v, err)
	}
	if problems, err := reopened.Check(); err != nil || len(problems) != 0 {
		t.Fatalf("Check() = %+v, %v", problems, err)
	}

	vols, _, err = s.Acquire("ctr2", []Request{{Namespace: "default", Name: "fresh", PersistLater: true}}, nil)
	if err != nil || vols[0].PersistLater {
		t.Fatalf("an existing volume: PersistLater = %v, %v; want false", vols[0].PersistLater, err)
	}
	if err := s.CopyUps().Persist("default", "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Persist of a missing volume = %v, want ErrNotFound", err)
	}
	if err := s.CopyUps().Persist("default", "../x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Persist of a bad name = %v, want ErrInvalid", err)
	}
}

// A node that crashed between making a named volume and its Persist can leave
// it with its sync-pending marker and a volume.json cut to nothing. No
// container ran on it, so the next request, or volume create, of that name
// makes it afresh instead of failing on a broken volume; one whose _data
// holds something is left for a person (Check reports it).
func TestUnfinishedVolumeIsMadeAgain(t *testing.T) {
	s, root := newStore(t)
	ns := filepath.Join(root, volumesDir, "default")
	unfinished := func(name string) {
		t.Helper()
		if _, _, err := s.Acquire("c-"+name, []Request{{Namespace: "default", Name: name, PersistLater: true}}, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Release("c-" + name); err != nil {
			t.Fatal(err)
		}
		// What the disk can show after the crash: the rename of the volume
		// into place, but not volume.json's data.
		if err := os.Truncate(filepath.Join(ns, name, metaFile), 0); err != nil {
			t.Fatal(err)
		}
	}
	unfinished("for-acquire")
	unfinished("for-create")
	unfinished("with-data")
	writeFile(t, filepath.Join(ns, "with-data", dataDir, "f"), "x")

	s = openStore(t, root) // as after the reboot
	vols, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "for-acquire", CreateOptions: CreateOptions{Labels: map[string]string{"k": "v"}}}}, nil)
	if err != nil {
		t.Fatalf("Acquire of an unfinished volume: %v", err)
	}
	if vols[0].Labels["k"] != "v" || !vols[0].Created {
		t.Errorf("Acquire = %+v, want the volume made afresh", vols[0])
	}
	if _, err := s.Create("default", "for-create", CreateOptions{}); err != nil {
		t.Fatalf("Create over an unfinished volume: %v", err)
	}
	if _, _, err := s.Acquire("c2", []Request{{Namespace: "default", Name: "with-data"}}, nil); err == nil {
		t.Error("a broken volume whose _data holds a file was made afresh")
	}
	if b, err := os.ReadFile(filepath.Join(ns, "with-data", dataDir, "f")); err != nil || string(b) != "x" {
		t.Errorf("its data: %q, %v", b, err)
	}
	if err := s.ReapTrash(); err != nil { // the unfinished volumes' old entries
		t.Fatal(err)
	}
	probs, err := s.Check()
	if err != nil || len(probs) != 1 || probs[0].Name != "with-data" {
		t.Errorf("Check = %+v, %v; want only with-data", probs, err)
	}
}
