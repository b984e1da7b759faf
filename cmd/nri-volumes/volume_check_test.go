package main

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
)

func TestVolumeCheck(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "precious"), []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := mustCLI(t, root, "check", "-A"); strings.TrimSpace(r.stdout) != "NAMESPACE   NAME   PROBLEM" || r.stderr != "" {
		t.Fatalf("check of a clean store: %+v", r)
	}
	mustCLI(t, root, "create", "good")
	mustCLI(t, root, "create", "-n", "shop", "good")
	vols := filepath.Join(root, "volumes")
	mkdir := func(p string) {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A volume directory whose metadata is gone.
	mkdir(filepath.Join(vols, "default", "nometa", "_data"))
	// Metadata whose data directory is gone.
	mustCLI(t, root, "create", "nodata")
	if err := os.Remove(filepath.Join(vols, "default", "nodata", "_data")); err != nil {
		t.Fatal(err)
	}
	// Symlinks planted in the store: as a volume, as a volume's _data and as a namespace.
	if err := os.Symlink(outside, filepath.Join(vols, "default", "planted")); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, root, "create", "datalink")
	if err := os.Remove(filepath.Join(vols, "default", "datalink", "_data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(vols, "default", "datalink", "_data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(vols, "linkedns")); err != nil {
		t.Fatal(err)
	}
	// An entry whose name would forge a table row if printed raw.
	mkdir(filepath.Join(vols, "shop", "x\nforged\trow"))

	beforeStore, beforeOutside := fstree.Snapshot(t, root), fstree.Snapshot(t, outside)

	r := runCLI(t, root, "", "check")
	if r.code != 1 || !strings.Contains(r.stderr, "4 problem(s)") {
		t.Fatalf("check: exit %d, stderr %q, want exit 1 and 4 problems", r.code, r.stderr)
	}
	rows := map[string]string{}
	for _, line := range r.stdoutLines[1:] {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "default" {
			t.Fatalf("check without -A printed a row of another namespace: %q", line)
		}
		rows[f[1]] = strings.Join(f[2:], " ")
	}
	if !strings.HasPrefix(r.stdoutLines[0], "NAMESPACE") || !strings.Contains(r.stdoutLines[0], "NAME") || !strings.Contains(r.stdoutLines[0], "PROBLEM") {
		t.Errorf("header = %q", r.stdoutLines[0])
	}
	for name, want := range map[string]string{
		"nometa":   "volume.json",
		"nodata":   "_data",
		"planted":  "symlink",
		"datalink": "_data",
	} {
		if !strings.Contains(rows[name], want) {
			t.Errorf("row for %s = %q, want it to mention %q", name, rows[name], want)
		}
	}
	if _, ok := rows["good"]; ok {
		t.Errorf("a good volume was reported: %q", rows["good"])
	}

	r = runCLI(t, root, "", "check", "-A")
	if r.code != 1 || !strings.Contains(r.stderr, "6 problem(s)") {
		t.Fatalf("check -A: exit %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
	if !strings.Contains(r.stdout, "linkedns") || !strings.Contains(r.stdout, `"x\nforged\trow"`) {
		t.Errorf("check -A misses the namespace symlink or prints a name raw:\n%s", r.stdout)
	}
	if len(r.stdoutLines) != 7 {
		t.Errorf("check -A printed %d lines, want a header and 6 rows:\n%s", len(r.stdoutLines), r.stdout)
	}

	r = runCLI(t, root, "", "check", "-n", "shop")
	if r.code != 1 || len(r.stdoutLines) != 2 || !strings.HasPrefix(r.stdoutLines[1], "shop") {
		t.Errorf("check -n shop: %+v", r)
	}

	if after := fstree.Snapshot(t, root); !maps.Equal(beforeStore, after) {
		t.Errorf("check changed the store:\nbefore %v\nafter  %v", beforeStore, after)
	}
	if after := fstree.Snapshot(t, outside); !maps.Equal(beforeOutside, after) {
		t.Errorf("check changed a directory outside the store:\nbefore %v\nafter  %v", beforeOutside, after)
	}
	if r := runCLI(t, root, "", "check", "extra"); r.code != 2 {
		t.Errorf("check with an argument: exit %d, want 2", r.code)
	}
}

// TestVolumeCheckStrayPins checks that check reports, in any namespace, a
// pin entry where nothing is mounted that opening the store could not
// remove, and leaves it.
func TestVolumeCheckStrayPins(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "good")
	stray := filepath.Join(root, "pins", "ctr1", "0")
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stray, "written"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, root, "", "check", "-n", "shop")
	if r.code != 1 || !strings.Contains(r.stdout, "pins/ctr1/0") || !strings.Contains(r.stdout, "stray pin") {
		t.Fatalf("check: %+v, want a row for the stray pin", r)
	}
	if _, err := os.Stat(filepath.Join(stray, "written")); err != nil {
		t.Errorf("check changed the stray pin: %v", err)
	}
}

// TestTrashLeftoversWithoutPlugin leaves in the trash what a volume rm or
// prune killed mid-delete leaves, with no plugin to reap it: check reports
// each entry, and the next rm or prune deletes them; an entry another
// process is deleting is left to it.
func TestTrashLeftoversWithoutPlugin(t *testing.T) {
	root := t.TempDir()
	vols := filepath.Join(root, "volumes")
	// A killed rm: the volume was renamed into the trash, its data not
	// (all) deleted yet.
	leave := func(name, trash string) {
		mustCLI(t, root, "create", name)
		if err := os.MkdirAll(filepath.Join(vols, "default", name, "_data", "a", "b"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vols, "default", name, "_data", "a", "b", "f"), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(vols, "default", name), filepath.Join(vols, ".trash", trash)); err != nil {
			t.Fatal(err)
		}
	}
	trashed := func() []string {
		entries, err := os.ReadDir(filepath.Join(vols, ".trash"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	leave("gone1", "0123456789abcdef")

	r := runCLI(t, root, "", "check", "-n", "shop")
	if r.code != 1 || !strings.Contains(r.stdout, ".trash/0123456789abcdef") {
		t.Errorf("check with a leftover in the trash: exit %d, stdout:\n%s", r.code, r.stdout)
	}
	if got := trashed(); len(got) != 1 {
		t.Fatalf("check changed the trash: %v", got)
	}

	// An entry that another process is deleting (it holds the entry's
	// flock) is that process's: check does not report it, rm leaves it.
	fd, err := unix.Open(filepath.Join(vols, ".trash", "0123456789abcdef"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, root, "", "check", "-A"); r.code != 0 {
		t.Errorf("check with an entry being deleted: exit %d, stdout:\n%s", r.code, r.stdout)
	}
	mustCLI(t, root, "create", "other")
	mustCLI(t, root, "rm", "other")
	if got := trashed(); len(got) != 1 {
		t.Errorf("in the trash after volume rm, with one entry being deleted by another process: %v", got)
	}
	unix.Close(fd)
	mustCLI(t, root, "rm", "-f", "nothing")
	if got := trashed(); len(got) != 0 {
		t.Errorf("left in the trash after volume rm: %v", got)
	}
	leave("gone2", "fedcba9876543210")
	mustCLI(t, root, "prune", "-f")
	if got := trashed(); len(got) != 0 {
		t.Errorf("left in the trash after volume prune: %v", got)
	}
	if r := runCLI(t, root, "", "check", "-A"); r.code != 0 {
		t.Errorf("check after the leftovers went: exit %d, stdout:\n%s", r.code, r.stdout)
	}
}
