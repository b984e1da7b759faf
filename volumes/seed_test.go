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
		v, err := s.CreateSeeding(r)
		if err != nil {
			t.Fatal(err)
		}
		want := Request{Namespace: "shop", Name: r.Name, Owner: r.Owner}
		if _, err := s.Acquire("ctr1", []Request{want}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "cut short") {
			t.Fatalf("Acquire of a volume being seeded: %v", err)
		}
		if st, err := s.ImportStateOf("shop", v.Name); err != nil || st != ImportCutShort {
			t.Fatalf("ImportStateOf = %v, %v", st, err)
		}
		if _, err := s.CreateSeeding(r); !errors.Is(err, ErrExists) {
			t.Fatalf("CreateSeeding again: %v", err)
		}
		// A pull that died part-way left a file; the store is reopened.
		if err := os.WriteFile(filepath.Join(root, "volumes", "shop", v.Name, "_data", "partial"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = openStore(t, root)
		if _, err := s.Acquire("ctr1", []Request{want}); !errors.Is(err, ErrInUse) {
			t.Fatalf("Acquire after a reopen: %v", err)
		}
		if _, err := s.Import("shop", v.Name, bytes.NewReader(tarOf(t, file("db", "rows"))), ArchiveLimits{}); err != nil {
			t.Fatalf("Import: %v", err)
		}
		if st, err := s.ImportStateOf("shop", v.Name); err != nil || st != ImportNone {
			t.Fatalf("ImportStateOf after the import = %v, %v", st, err)
		}
		got, err := s.Acquire("ctr1", []Request{want})
		if err != nil {
			t.Fatalf("Acquire once seeded: %v", err)
		}
		names, _ := os.ReadDir(got[0].Mountpoint)
		if len(names) != 1 || names[0].Name() != "db" {
			t.Errorf("seeded volume holds %v, want db alone", names)
		}
	}
}
