package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestSyncLater: a named volume that Acquire makes for a Request with
// SyncLater says so (Unsynced) and is whole at once; Sync then makes it
// durable. An existing volume and an anonymous one never come back
// Unsynced: the caller has nothing to sync.
func TestSyncLater(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	owner := &Owner{PodSandboxID: "pod1", Container: "app", Target: "/anon"}
	vols, err := s.Acquire("ctr1", []Request{{Namespace: "default", Name: "fresh", SyncLater: true}, {Namespace: "default", Owner: owner, SyncLater: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !vols[0].Unsynced || vols[1].Unsynced {
		t.Fatalf("Unsynced = %v (named), %v (anonymous); want true, false", vols[0].Unsynced, vols[1].Unsynced)
	}
	pending := filepath.Join(s.Root(), volumesDir, "default", "fresh", syncPending)
	if _, err := os.Stat(pending); err != nil {
		t.Fatalf("an unsynced volume has no %s: %v", syncPending, err)
	}
	for i := 0; i < 2; i++ { // the plugin's Sync, then the hook's
		if err := s.Sync("default", "fresh"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(pending); !os.IsNotExist(err) {
			t.Fatalf("after Sync: %s is still there (%v)", syncPending, err)
		}
	}
	// Whole at once, to this process and to a new one.
	reopened, err := Open(s.Root())
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

	vols, err = s.Acquire("ctr2", []Request{{Namespace: "default", Name: "fresh", SyncLater: true}})
	if err != nil || vols[0].Unsynced {
		t.Fatalf("an existing volume: Unsynced = %v, %v; want false", vols[0].Unsynced, err)
	}
	if err := s.Sync("default", "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Sync of a missing volume = %v, want ErrNotFound", err)
	}
	if err := s.Sync("default", "../x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Sync of a bad name = %v, want ErrInvalid", err)
	}
}
