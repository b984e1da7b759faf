package volumes

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A volume made for a seeding pull is held out of containers from the
// moment it has its name until Import fills it; one whose pull died
// part-way stays held, after a reopen too, and the next Import starts it
// over.
func TestCreateSeedingHoldsContainersOut(t *testing.T) {
	for _, r := range []Request{
		{Namespace: "shop", Name: "pg"},
		{Namespace: "shop", Owner: &Owner{PodSandboxID: "pod1", PodName: "p", Container: "c", Target: "/data"}},
	} {
		s, root := newStore(t)
		v, err := s.Seeds().Create(r)
		if err != nil {
			t.Fatal(err)
		}
		want := Request{Namespace: "shop", Name: r.Name, Owner: r.Owner}
		if _, _, err := s.Acquire("ctr1", []Request{want}, nil); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "cut short") {
			t.Fatalf("Acquire of a volume being seeded: %v", err)
		}
		if st, err := s.Seeds().ImportState("shop", v.Name); err != nil || st != ImportCutShort {
			t.Fatalf("ImportStateOf = %v, %v", st, err)
		}
		if _, err := s.Seeds().Create(r); !errors.Is(err, ErrExists) {
			t.Fatalf("CreateSeeding again: %v", err)
		}
		// A pull that died part-way left a file; the store is reopened.
		if err := os.WriteFile(filepath.Join(root, "volumes", "shop", v.Name, "_data", "partial"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = openStore(t, root)
		if _, _, err := s.Acquire("ctr1", []Request{want}, nil); !errors.Is(err, ErrInUse) {
			t.Fatalf("Acquire after a reopen: %v", err)
		}
		if _, err := s.Import("shop", v.Name, bytes.NewReader(tarOf(t, file("db", "rows"))), ArchiveLimits{}); err != nil {
			t.Fatalf("Import: %v", err)
		}
		if st, err := s.Seeds().ImportState("shop", v.Name); err != nil || st != ImportNone {
			t.Fatalf("ImportStateOf after the import = %v, %v", st, err)
		}
		got, _, err := s.Acquire("ctr1", []Request{want}, nil)
		if err != nil {
			t.Fatalf("Acquire once seeded: %v", err)
		}
		names, _ := os.ReadDir(got[0].Mountpoint)
		if len(names) != 1 || names[0].Name() != "db" {
			t.Errorf("seeded volume holds %v, want db alone", names)
		}
	}
}

// A seeding pull that fails leaves its volume empty and still refused to
// containers, so that when removing it fails too (a CLI export holds it, a
// sized volume does not deactivate) or the plugin dies before the removal,
// no container starts on an empty volume taken for seeded: the next
// seeding pull starts it over.
func TestFailedSeedingImportKeepsVolumeHeld(t *testing.T) {
	s, root := newStore(t)
	r := Request{Namespace: "shop", Name: "pg"}
	if _, err := s.Seeds().Create(r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("shop", "pg", bytes.NewReader(tarOf(t, file("ok", "x"), file("../escape", "x"))), ArchiveLimits{}); !errors.Is(err, ErrArchive) {
		t.Fatalf("Import of a hostile tar: %v", err)
	}
	if names, err := os.ReadDir(filepath.Join(root, "volumes", "shop", "pg", "_data")); err != nil || len(names) != 0 {
		t.Fatalf("after the failed import _data holds %v (%v), want nothing", names, err)
	}
	if st, err := s.Seeds().ImportState("shop", "pg"); err != nil || st != ImportCutShort {
		t.Fatalf("ImportStateOf after a failed seeding import = %v, %v; want cut short", st, err)
	}
	if _, _, err := s.Acquire("ctr1", []Request{r}, nil); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("Acquire after a failed seeding import: %v", err)
	}
	// The next pull starts it over and, ending well, frees it.
	if _, err := s.Import("shop", "pg", bytes.NewReader(tarOf(t, file("db", "rows"))), ArchiveLimits{}); err != nil {
		t.Fatalf("Import again: %v", err)
	}
	if _, _, err := s.Acquire("ctr1", []Request{r}, nil); err != nil {
		t.Fatalf("Acquire once seeded: %v", err)
	}
}

// A failed import into a volume that no import had held (volume import by
// hand) leaves it empty and usable, as it found it.
func TestFailedPlainImportLeavesVolumeUsable(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Create("shop", "pg", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("shop", "pg", bytes.NewReader(tarOf(t, file("../escape", "x"))), ArchiveLimits{}); !errors.Is(err, ErrArchive) {
		t.Fatalf("Import of a hostile tar: %v", err)
	}
	if st, err := s.Seeds().ImportState("shop", "pg"); err != nil || st != ImportNone {
		t.Fatalf("ImportStateOf = %v, %v; want none", st, err)
	}
	if _, _, err := s.Acquire("ctr1", []Request{{Namespace: "shop", Name: "pg"}}, nil); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
}

// ImportState tells a volume that does not exist from one without an
// import, as the seeder needs, without the store's lock.
func TestImportStateOfMissingVolume(t *testing.T) {
	s := newTestStore(t)
	if _, err := s.Seeds().ImportState("shop", "none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ImportState of a missing volume: %v; want ErrNotFound", err)
	}
	if _, err := s.Create("shop", "pg", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Seeds().ImportState("shop", "pg"); err != nil || st != ImportNone {
		t.Fatalf("ImportState of a volume without an import: %v, %v; want ImportNone", st, err)
	}
}
