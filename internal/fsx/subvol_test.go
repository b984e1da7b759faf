package fsx

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// loopBtrfs mounts a fresh btrfs made in a sparse file and returns its
// mount point; the test's cleanup unmounts it. (The harness has one too,
// but it imports this package.)
func loopBtrfs(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t, "needs root to mount a btrfs")
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		t.Skip("no mkfs.btrfs (btrfs-progs)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "btrfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount the btrfs: %v: %s", err, out)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

// subvolume makes the btrfs subvolume dir/name (BTRFS_IOC_SUBVOL_CREATE).
func subvolume(t *testing.T, dir, name string) string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var args struct {
		Fd   int64
		Name [4088]byte
	}
	copy(args.Name[:], name)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), 0x5000940e, uintptr(unsafe.Pointer(&args))); errno != 0 {
		t.Fatalf("create subvolume %s/%s: %v", dir, name, errno)
	}
	return filepath.Join(dir, name)
}

// setReadOnly sets the read-only flag of subvolume dir
// (BTRFS_IOC_SUBVOL_SETFLAGS).
func setReadOnly(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags := uint64(btrfsSubvolRdonly)
	if err := IoctlPtr(fd, btrfsIocSubvolSetflags, unsafe.Pointer(&flags)); err != nil {
		t.Fatalf("make %s read-only: %v", dir, err)
	}
}

// TestWalksCrossNestedSubvolumes checks that a btrfs subvolume nested in the
// tree, which has a device number of its own, counts as part of the tree:
// DiskUsage counts its bytes and RemoveAll deletes it, depth first, a
// read-only one too. A bind
// mount of a subvolume of the same btrfs looks the same to stat, but is a
// mount: the walks never cross it.
func TestWalksCrossNestedSubvolumes(t *testing.T) {
	mnt := loopBtrfs(t)
	other := subvolume(t, mnt, "other")
	if err := os.WriteFile(filepath.Join(other, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(mnt, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	b := subvolume(t, subvolume(t, tree, "a"), "b")
	if err := os.MkdirAll(filepath.Join(b, "c", "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "c", "d", "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// Its owner (a pod) may make a subvolume read-only.
	setReadOnly(t, b)
	if err := os.WriteFile(filepath.Join(b, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write into a read-only subvolume: %v, want EROFS", err)
	}
	bind := filepath.Join(tree, "bind")
	if err := os.Mkdir(bind, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(other, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(bind, unix.MNT_DETACH)

	fd, dev := openDirDev(t, mnt)
	defer unix.Close(fd)
	treeFd, err := OpenDir(fd, "tree")
	if err != nil {
		t.Fatal(err)
	}
	used, err := DiskUsage(treeFd, dev)
	unix.Close(treeFd)
	if err != nil || used < 1<<20 {
		t.Errorf("DiskUsage of a tree with 1 MiB in a nested subvolume = %d, %v", used, err)
	}

	if err := RemoveAll(fd, "tree", dev); !errors.Is(err, ErrOtherFS) {
		t.Errorf("RemoveAll across a bind mount of a subvolume: %v, want ErrOtherFS", err)
	}
	if b, err := os.ReadFile(filepath.Join(other, "keep")); err != nil || string(b) != "keep" {
		t.Fatalf("the bind mount's content is gone: %q, %v", b, err)
	}
	if err := unix.Unmount(bind, 0); err != nil {
		t.Fatal(err)
	}
	if err := RemoveAll(fd, "tree", dev); err != nil {
		t.Fatalf("RemoveAll of a tree with nested subvolumes: %v", err)
	}
	if _, err := os.Lstat(tree); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tree still there: %v", err)
	}

	// RemoveAll named a read-only subvolume itself.
	ro := subvolume(t, mnt, "ro")
	if err := os.WriteFile(filepath.Join(ro, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	setReadOnly(t, ro)
	if err := RemoveAll(fd, "ro", dev); err != nil {
		t.Fatalf("RemoveAll of a read-only subvolume: %v", err)
	}
	if _, err := os.Lstat(ro); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read-only subvolume still there: %v", err)
	}
}
