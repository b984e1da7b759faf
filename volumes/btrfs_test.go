package volumes

import (
	"errors"
	"github.com/nri-volumes/nri-volumes/test/harness"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// btrfsRoot mounts a fresh btrfs, made in a sparse file, and returns a
// directory on it; the test's cleanup unmounts it.
func btrfsRoot(t *testing.T) string {
	t.Helper()
	requireLoop(t)
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		t.Skip("no mkfs.btrfs (btrfs-progs)")
	}
	mnt := harness.LoopBtrfs(t, t.TempDir(), 512<<20)
	return mnt
}

// TestSizedBtrfsVolume checks the btrfs backend, which auto picks when the
// store is on btrfs: _data is a subvolume whose qgroup stops writes past the
// size with EDQUOT, use is read from the qgroup, growing raises the limit,
// and removal deletes the subvolume.
func TestSizedBtrfsVolume(t *testing.T) {
	root := btrfsRoot(t)
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Create("default", "b", CreateOptions{Size: 10 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if v.Backend != BackendBtrfs {
		t.Fatalf("backend on btrfs = %q", v.Backend)
	}
	vols, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	data := vols[0].Mountpoint
	var st unix.Stat_t
	if err := unix.Stat(data, &st); err != nil || st.Ino != btrfsFirstFreeObjectID {
		t.Fatalf("_data is no subvolume: ino %d, %v", st.Ino, err)
	}
	if err := writeBytes(filepath.Join(data, "big"), 20<<20); !errors.Is(err, unix.EDQUOT) {
		t.Fatalf("writing 20 MiB into a 10 MiB btrfs volume: %v, want EDQUOT", err)
	}
	os.Remove(filepath.Join(data, "big"))
	if err := writeBytes(filepath.Join(data, "keep"), 3<<20); err != nil {
		t.Fatal(err)
	}
	if used, err := s.Size(vols[0]); err != nil || used < 3<<20 || used > 4<<20 {
		t.Errorf("Size of a btrfs volume holding 3 MiB = %d, %v", used, err)
	}
	if _, err := s.Grow("default", "b", 32<<20); err != nil {
		t.Fatal(err)
	}
	if err := writeBytes(filepath.Join(data, "more"), 20<<20); err != nil {
		t.Errorf("a 20 MiB write after growing to 32 MiB: %v", err)
	}
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("default", "b"); err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(filepath.Join(root, "volumes", "default")); len(names) != 0 {
		t.Errorf("left in the namespace after Remove: %v", names)
	}
}
