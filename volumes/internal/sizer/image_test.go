package sizer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// TestImageLifecycle makes, mounts, fills, grows, measures and unmounts an
// image in a bare directory, with no store around it: df shows the size
// asked for, and a write past it gets ENOSPC.
func TestImageLifecycle(t *testing.T) {
	testutil.RequireRoot(t, "needs root for loop devices and mounts")
	if _, err := os.Stat(LoopControl); err != nil {
		t.Skip("no loop devices")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4 (e2fsprogs)")
	}
	dir := t.TempDir()
	volFd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(volFd)
	z := Image{}
	const size = 8 << 20
	if err := z.Prepare(volFd, size); err != nil {
		t.Fatal(err)
	}
	if err := z.Activate(volFd, dir); err != nil {
		t.Fatal(err)
	}
	defer z.Deactivate(volFd, dir)
	if !IsDataMounted(volFd) {
		t.Fatal("_data not mounted after Activate")
	}
	data := filepath.Join(dir, DataDir)
	if names, _ := os.ReadDir(data); len(names) != 0 {
		t.Errorf("a new image's root holds %d entries, want none", len(names))
	}
	shows := func() int64 {
		var st unix.Statfs_t
		if err := unix.Statfs(data, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Bsize
	}
	if got := shows(); got != size {
		t.Errorf("df shows %d bytes, want %d", got, size)
	}
	big := make([]byte, 2*size)
	err = os.WriteFile(filepath.Join(data, "big"), big, 0o644)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing twice the size: %v, want ENOSPC", err)
	}
	os.Remove(filepath.Join(data, "big"))
	if err := os.WriteFile(filepath.Join(data, "f"), big[:1<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	if used, err := z.Usage(volFd); err != nil || used < 1<<20 {
		t.Errorf("Usage = %d, %v; want at least 1 MiB", used, err)
	}
	if err := z.Deactivate(volFd, dir); err != nil {
		t.Fatal(err)
	}
	if IsDataMounted(volFd) {
		t.Fatal("_data mounted after Deactivate")
	}
	if err := z.Grow(volFd, dir, 2*size); err != nil {
		t.Fatal(err)
	}
	if err := z.Activate(volFd, dir); err != nil {
		t.Fatal(err)
	}
	// resize2fs clears the overhead count that Prepare's search reads, so a
	// file system grown offline shows about its size, not exactly.
	if got := shows(); got < 2*size*99/100 {
		t.Errorf("df after growing offline shows %d bytes, want about %d", got, 2*size)
	}
	if b, err := os.ReadFile(filepath.Join(data, "f")); err != nil || len(b) != 1<<20 {
		t.Errorf("the file written before growing: %d bytes, %v", len(b), err)
	}
}
