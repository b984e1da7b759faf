package pin

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

func openPath(t *testing.T, p string, flags int) int {
	t.Helper()
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestMakeAndRemove pins a directory and a file in a bare directory, with
// no store around them: each pin shows its object, and a symlink swapped in
// for the source's path afterwards changes nothing the pin shows. Remove
// unmounts the pin and leaves the source's content alone; a FIFO is refused.
func TestMakeAndRemove(t *testing.T) {
	testutil.RequireRoot(t, "needs root to bind mount")
	src, pins := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirFd := openPath(t, pins, unix.O_RDONLY|unix.O_DIRECTORY)

	p, err := Make(dirFd, pins, "0", openPath(t, src, unix.O_PATH))
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(dirFd, pins, "0", true)
	fp, err := Make(dirFd, pins, "1", openPath(t, filepath.Join(src, "f"), unix.O_PATH))
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(dirFd, pins, "1", true)

	// Swap the source for a symlink: the pins hold what was opened.
	moved := src + ".moved"
	if err := os.Rename(src, moved); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(moved)
	if err := os.Symlink("/etc", src); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(src)
	for _, f := range []string{filepath.Join(p, "f"), fp} {
		if b, err := os.ReadFile(f); err != nil || string(b) != "kept" {
			t.Errorf("%s shows %q, %v; want the pinned file's content", f, b, err)
		}
	}

	for _, e := range []string{"0", "1"} {
		if err := Remove(dirFd, pins, e, true); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(pins, e)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin %s still there after Remove: %v", e, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(moved, "f")); err != nil || string(b) != "kept" {
		t.Errorf("the pinned directory's file after Remove: %q, %v", b, err)
	}

	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Make(dirFd, pins, "2", openPath(t, fifo, unix.O_PATH)); !errors.Is(err, ErrKind) {
		t.Errorf("pinning a FIFO: %v, want ErrKind", err)
	}
	if _, err := os.Lstat(filepath.Join(pins, "2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused pin left its entry: %v", err)
	}
}
