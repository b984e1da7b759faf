// Package sizer holds the size backends of sized volumes: the ext4 disk
// image on a loop device (Image) and the legacy btrfs qgroup (Btrfs). Each
// works on a volume's directory, handed to it open as a descriptor (and its
// path, where a mount call or a message needs one): it makes the volume's
// data directory, attaches and mounts it, grows it, measures it and takes it
// down. It keeps no state and takes no lock; the store that calls it holds
// its own lock around every call but Usage.
package sizer

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// The names a backend gives the entries of a volume's directory.
const (
	// DataDir is the volume's data, the directory containers mount; for
	// an image, the mount point of its file system.
	DataDir = "_data"
	// ImageFile is the ext4 disk image of a volume of the image backend.
	ImageFile = "disk.img"
)

// ErrBroken marks a volume whose backend's files are missing or are not
// what the backend made: a disk image that is not a regular file, a
// superblock that is not ext4's.
var ErrBroken = errors.New("broken volume")

// BusyError is the error of Deactivate when the volume's file system cannot
// be unmounted because something holds it (a mount inside it).
type BusyError struct {
	// Target is the mount point that stayed mounted.
	Target string
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("its file system at %s is busy", e.Target)
}

// Sizer enforces the size of one volume. Its methods get the volume's
// directory open at volFd and its path (for mount calls and messages).
type Sizer interface {
	// Prepare sets up a new volume, still under a temporary name, whose
	// directory is open at volFd: it makes DataDir.
	Prepare(volFd int, size int64) error
	// Activate makes DataDir the sized file system; it is idempotent.
	Activate(volFd int, volPath string) error
	// Deactivate undoes Activate; an inactive volume is no error.
	Deactivate(volFd int, volPath string) error
	// Usage returns the bytes used in the volume without walking it.
	Usage(volFd int) (int64, error)
	// Grow raises the size of an active volume to size.
	Grow(volFd int, volPath string, size int64) error
}

var (
	_ Sizer = Image{}
	_ Sizer = Btrfs{}
)

// MkdirData makes DataDir, mode 0755 whatever the umask, in the volume
// directory open at volFd: the data directory of a volume without a size,
// and the mount point of an image's file system.
func MkdirData(volFd int) error {
	if err := unix.Mkdirat(volFd, DataDir, 0o755); err != nil {
		return &os.PathError{Op: "mkdirat", Path: DataDir, Err: err}
	}
	return unix.Fchmodat(volFd, DataDir, 0o755, 0)
}

// IsDataMounted reports whether the DataDir of the volume directory open at
// volFd is a mount point: a sized volume's own file system is mounted there.
func IsDataMounted(volFd int) bool {
	parent, err := fsx.Fstat(volFd)
	if err != nil {
		return false
	}
	st, err := fsx.Lstat(volFd, DataDir)
	return err == nil && fsx.IsDir(&st) && st.Dev != parent.Dev
}

// OnBtrfs reports whether the file open at fd is on btrfs.
func OnBtrfs(fd int) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && st.Type == unix.BTRFS_SUPER_MAGIC
}

// statfsData is statfs of the DataDir of the volume directory open at volFd.
func statfsData(volFd int, st *unix.Statfs_t) error {
	fd, err := fsx.OpenDir(volFd, DataDir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fstatfs(fd, st)
}
