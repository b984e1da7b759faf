package fsx

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// btrfs subvolumes. Any process may make one (BTRFS_IOC_SUBVOL_CREATE needs
// no capability), so a pod can nest them in its volume. A subvolume has a
// device number of its own, like a mount, but the mount ID of its parent; a
// mount of anything, a bind mount of a subvolume of the same btrfs
// included, has a mount ID of its own. The walks treat a nested subvolume as
// part of the tree and a mount as the end of it.

// The ioctls of linux/btrfs.h that removal needs; x/sys does not carry them.
const (
	btrfsIocSubvolGetflags = 0x80089419 // _IOR(0x94, 25, __u64)
	btrfsIocSubvolSetflags = 0x4008941a // _IOW(0x94, 26, __u64)
	btrfsSubvolRdonly      = 1 << 1
	// btrfsSubvolRootIno is the inode number of a subvolume's root
	// directory (BTRFS_FIRST_FREE_OBJECTID).
	btrfsSubvolRootIno = 256
)

// inside reports whether the directory with stat st, open at fd (or, with
// fd the current directory's, its entry name), belongs to the walk's file
// system: it is on the device of the current directory, its parent, or it
// is a btrfs subvolume nested there.
func (w *walk) inside(st *unix.Stat_t, fd int, name string) bool {
	if st.Dev == w.top().id.dev {
		return true
	}
	if w.mnt == 0 || st.Ino != btrfsSubvolRootIno {
		return false
	}
	id, err := mountID(fd, name)
	return err == nil && id == w.mnt
}

// writableSubvolume makes the directory the walk just entered writable when
// it is a nested subvolume (see makeWritable).
func (w *walk) writableSubvolume() error {
	if len(w.stack) < 2 {
		return nil
	}
	l := w.top()
	if l.id.dev == w.stack[len(w.stack)-2].id.dev {
		return nil
	}
	if err := makeWritable(l.fd); err != nil {
		return &os.PathError{Op: "make btrfs subvolume writable", Path: w.path(""), Err: err}
	}
	return nil
}

// makeWritable clears the read-only flag of the subvolume open at fd: its
// owner, a pod, can set it (BTRFS_IOC_SUBVOL_SETFLAGS), and nothing in it
// could be removed then.
func makeWritable(fd int) error {
	var flags uint64
	if err := IoctlPtr(fd, btrfsIocSubvolGetflags, unsafe.Pointer(&flags)); err != nil {
		return err
	}
	if flags&btrfsSubvolRdonly == 0 {
		return nil
	}
	flags &^= btrfsSubvolRdonly
	return IoctlPtr(fd, btrfsIocSubvolSetflags, unsafe.Pointer(&flags))
}

// IoctlPtr makes the ioctl req, whose argument is a pointer, on fd: for the
// ioctls x/sys does not carry (btrfs's).
func IoctlPtr(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// btrfsMount returns the mount ID of the directory open at fd when it is on
// btrfs, 0 otherwise.
func btrfsMount(fd int) uint64 {
	var sfs unix.Statfs_t
	if unix.Fstatfs(fd, &sfs) != nil || sfs.Type != unix.BTRFS_SUPER_MAGIC {
		return 0
	}
	id, err := mountID(fd, "")
	if err != nil {
		return 0
	}
	return id
}

// mountID returns the mount ID of name below the directory open at fd, or of
// that directory itself when name is "". A mount point's is that of the
// mount on it.
func mountID(fd int, name string) (uint64, error) {
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_NO_AUTOMOUNT
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := unix.Statx(fd, name, flags, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, &os.PathError{Op: "statx", Path: name, Err: err}
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, &os.PathError{Op: "statx", Path: name, Err: unix.ENOSYS}
	}
	return stx.Mnt_id, nil
}

// NestedSubvolume reports whether the directory open at fd, with stat st, is
// the root of a btrfs subvolume on the mount of the directory open at
// parent: part of the parent's tree, not a mount point.
func NestedSubvolume(parent, fd int, st *unix.Stat_t) bool {
	if st.Ino != btrfsSubvolRootIno {
		return false
	}
	mnt := btrfsMount(parent)
	if mnt == 0 {
		return false
	}
	id, err := mountID(fd, "")
	return err == nil && id == mnt
}
