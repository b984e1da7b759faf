package fstree

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSnapshotSeesChanges checks that each kind of change shows in a snapshot,
// since the tests that rely on it would pass vacuously otherwise.
func TestSnapshotSeesChanges(t *testing.T) {
	changes := map[string]func(dir string) error{
		"write":   func(d string) error { return os.WriteFile(filepath.Join(d, "f"), []byte("other"), 0o644) },
		"chmod":   func(d string) error { return os.Chmod(filepath.Join(d, "f"), 0o600) },
		"create":  func(d string) error { return os.Mkdir(filepath.Join(d, "new"), 0o755) },
		"remove":  func(d string) error { return os.Remove(filepath.Join(d, "f")) },
		"relink":  func(d string) error { os.Remove(filepath.Join(d, "l")); return os.Symlink("/", filepath.Join(d, "l")) },
		"skipped": func(d string) error { return os.WriteFile(filepath.Join(d, ".lock"), []byte("2"), 0o644) },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644)
			os.WriteFile(filepath.Join(dir, ".lock"), []byte("1"), 0o644)
			os.Symlink("f", filepath.Join(dir, "l"))
			before := Snapshot(t, dir, ".lock")
			if err := change(dir); err != nil {
				t.Fatal(err)
			}
			after := Snapshot(t, dir, ".lock")
			same := len(before) == len(after)
			for k, v := range before {
				same = same && after[k] == v
			}
			if want := name == "skipped"; same != want {
				t.Errorf("snapshots equal = %v after %s, want %v", same, name, want)
			}
		})
	}
}
