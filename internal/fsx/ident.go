package fsx

import (
	"os"

	"golang.org/x/sys/unix"
)

// ID is what a file is, whichever path or mount reaches it: its device and
// inode. A bind mount shows the same IDs under another path.
type ID struct{ Dev, Ino uint64 }

// Identity returns the ID of the file open at fd (an O_PATH descriptor
// does) and the ID of the mount it is on. The mount ID is 0 when the kernel
// cannot tell (before Linux 5.8); callers then compare devices.
func Identity(fd int) (id ID, mnt uint64, err error) {
	var stx unix.Statx_t
	err = unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_MNT_ID, &stx)
	if err != nil {
		return ID{}, 0, &os.PathError{Op: "statx", Path: ProcPath(fd), Err: err}
	}
	id = ID{Dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), Ino: stx.Ino}
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		mnt = stx.Mnt_id
	}
	return id, mnt, nil
}

// PathIdentity returns the ID of the file at path, following symlinks: for
// paths an administrator configured, which are trusted.
func PathIdentity(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}
