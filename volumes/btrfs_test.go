package volumes

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/test/harness"
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

// TestSizedBtrfsVolume checks the btrfs backend, which the store keeps
// serving for the volumes an earlier release made (no configuration picks it
// now): _data is a subvolume whose qgroup stops writes past the size with
// EDQUOT, use is read from the qgroup, growing raises the limit, and removal
// deletes the subvolume.
func TestSizedBtrfsVolume(t *testing.T) {
	root := btrfsRoot(t)
	s, err := Open(root, WithSizePolicy(SizePolicy{Backend: BackendBtrfs}))
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
	vols, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "b"}}, nil)
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

// openBtrfs opens a store on a fresh btrfs and unmounts whatever the test
// leaves mounted in it before the btrfs goes.
func openBtrfs(t *testing.T) (*Store, string) {
	t.Helper()
	root := btrfsRoot(t)
	return openSizedAt(t, root), root
}

// makeSubvolume makes the btrfs subvolume name in dir with the ioctl a pod
// without any capability may call.
func makeSubvolume(dir, name string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var args btrfsVolArgs
	copy(args.Name[:], name)
	return fsx.IoctlPtr(fd, btrfsIocSubvolCreate, unsafe.Pointer(&args))
}

// TestBtrfsStoreSubvolumeCannotEscapeSize is what a pod tries on a store on
// btrfs: it makes a subvolume inside its 16 MiB volume and writes 32 MiB
// there. A btrfs qgroup limit does not cover a subvolume made below it, so
// the write must meet a limit anyway: the size holds whatever a pod does
// inside its volume.
func TestBtrfsStoreSubvolumeCannotEscapeSize(t *testing.T) {
	s, _ := openBtrfs(t)
	if _, err := s.Create("default", "small", CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "small"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release("ctr")
	dir := filepath.Join(vols[0].Mountpoint, "sub")
	if err := makeSubvolume(vols[0].Mountpoint, "sub"); err != nil {
		// Not on btrfs inside the volume: a plain directory then.
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeBytes(filepath.Join(dir, "big"), 32<<20); err == nil {
		t.Fatalf("32 MiB written into a subvolume inside a 16 MiB volume (backend %q)", vols[0].Backend)
	}
}

// TestBtrfsNestedSubvolumesRemoved fills volumes on a btrfs store with
// subvolumes nested two deep, one read-only, as a pod may: their bytes
// count in Size, and Remove deletes them depth first, never following a symlink out of the
// volume, leaving nothing in the trash.
func TestBtrfsNestedSubvolumesRemoved(t *testing.T) {
	s, root := openBtrfs(t)
	outside := filepath.Join(root, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("default", "plain", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Reconfigure(WithSizePolicy(SizePolicy{Backend: BackendBtrfs}))
	if _, err := s.Create("default", "qgroup", CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"plain", "qgroup"} {
		v, err := s.Get("default", name)
		if err != nil {
			t.Fatal(err)
		}
		data := v.Mountpoint
		if err := makeSubvolume(data, "a"); err != nil {
			t.Fatal(err)
		}
		if err := makeSubvolume(filepath.Join(data, "a"), "b"); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(data, "a", "b", "dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeBytes(filepath.Join(data, "a", "b", "dir", "f"), 4<<20); err != nil {
			t.Fatal(err)
		}
		if err := writeBytes(filepath.Join(data, "a", "g"), 4<<20); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(data, "a", "b", "out")); err != nil {
			t.Fatal(err)
		}
		// A pod may make its subvolume read-only, too.
		fd, err := unix.Open(filepath.Join(data, "a"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		flags := uint64(1 << 1)                                    // BTRFS_SUBVOL_RDONLY
		err = fsx.IoctlPtr(fd, 0x4008941a, unsafe.Pointer(&flags)) // BTRFS_IOC_SUBVOL_SETFLAGS
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		if used, err := s.Size(v); err != nil || used < 8<<20 {
			t.Errorf("Size of %s holding 8 MiB in nested subvolumes = %d, %v", name, used, err)
		}
		if err := s.Remove("default", name); err != nil {
			t.Errorf("Remove %s: %v", name, err)
		}
	}
	if names, _ := os.ReadDir(filepath.Join(root, "volumes", "default")); len(names) != 0 {
		t.Errorf("left in the namespace: %v", names)
	}
	if names, _ := os.ReadDir(filepath.Join(root, "volumes", trashDir)); len(names) != 0 {
		t.Errorf("left in the trash: %v", names)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "keep")); err != nil || string(b) != "keep" {
		t.Errorf("the symlink's target was touched: %q, %v", b, err)
	}
}

// What a pod calls, from linux/btrfs.h: the store's own btrfs code is in
// volumes/internal/sizer, and these tests act as the pod does.
const (
	btrfsIocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	// btrfsFirstFreeObjectID is the inode number of a subvolume's root.
	btrfsFirstFreeObjectID = 256
)

type btrfsVolArgs struct {
	Fd   int64
	Name [4088]byte
}
