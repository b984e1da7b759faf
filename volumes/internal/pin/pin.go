// Package pin holds the mechanics of a pin: a private, recursive bind mount
// of exactly an object a caller opened, on an entry of a directory the
// caller hands in open, so that the runtime mounts what was checked and not
// whatever a path names by the time it mounts (open_tree, mount_setattr,
// move_mount). It also removes a pin without ever deleting what the pin
// showed. Which pins exist, their names and who holds them is the store's
// bookkeeping, not this package's; it keeps no state and takes no lock.
package pin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// maxUnmounts bounds the unmounts of one pin entry: one is the pin,
// anything more was stacked on it.
const maxUnmounts = 16

// ErrKind is the error of Make for an object that is neither a directory
// nor a regular file: nothing else can be pinned.
var ErrKind = errors.New("only a directory or a regular file can be pinned")

// Make makes entry of the directory dir, open at dirFd, a private,
// recursive bind mount of the object open at src (an O_PATH descriptor is
// enough), and returns the pin's path. A pin already at entry (an earlier
// try's) is removed first.
func Make(dirFd int, dir, entry string, src int) (string, error) {
	kind, err := pinnable(src)
	if err != nil {
		return "", err
	}
	if err := Remove(dirFd, dir, entry, true); err != nil {
		return "", err
	}
	if kind == unix.S_IFDIR {
		err = unix.Mkdirat(dirFd, entry, 0o700)
	} else {
		var fd int
		fd, err = unix.Openat(dirFd, entry, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return "", &os.PathError{Op: "create pin", Path: filepath.Join(dir, entry), Err: err}
	}
	if err := bindPrivate(src, dirFd, entry); err != nil {
		Remove(dirFd, dir, entry, false)
		return "", &os.PathError{Op: "pin", Path: filepath.Join(dir, entry), Err: err}
	}
	return filepath.Join(dir, entry), nil
}

// Pinnable checks that the object open at src can be pinned, before a
// caller makes anything to hold its pin; the error is ErrKind when it is
// neither a directory nor a regular file.
func Pinnable(src int) error {
	_, err := pinnable(src)
	return err
}

func pinnable(src int) (uint32, error) {
	st, err := fsx.Fstat(src)
	if err != nil {
		return 0, err
	}
	kind := st.Mode & unix.S_IFMT
	if kind != unix.S_IFDIR && kind != unix.S_IFREG {
		return 0, ErrKind
	}
	return kind, nil
}

// bindPrivate mounts a private copy of the mount tree at src, submounts
// included, on entry below dirFd. The copy is made private before it is
// attached, so it never joins the peer group of its source; attached below a
// shared mount (the store of a DaemonSet with Bidirectional propagation) it
// propagates to the host like any new mount. It needs Linux 5.12.
func bindPrivate(src, dirFd int, entry string) error {
	tree, err := unix.OpenTree(src, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Propagation: unix.MS_PRIVATE}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr: %w", err)
	}
	target, err := unix.Openat(dirFd, entry, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// Remove removes entry of the pin directory dir, open at dirFd: with
// unmount set it first unmounts whatever is mounted there, then it removes
// the empty directory or file the pin was mounted on. It never removes
// anything else, so what a pin showed is never deleted: a directory with
// content stays, and so does anything still mounted.
func Remove(dirFd int, dir, entry string, unmount bool) error {
	p := filepath.Join(dir, entry)
	for i := 0; unmount; i++ {
		err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EINVAL) {
			break // not a mount point (any more)
		}
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return &os.PathError{Op: "unmount", Path: p, Err: err}
		}
		if i == maxUnmounts {
			return &os.PathError{Op: "unmount", Path: p, Err: errors.New("still mounted after many unmounts")}
		}
	}
	st, err := fsx.Lstat(dirFd, entry)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	flags := 0
	if fsx.IsDir(&st) {
		flags = unix.AT_REMOVEDIR
	} else if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size != 0 {
		return &os.PathError{Op: "remove", Path: p, Err: errors.New("not an empty pin")}
	}
	if err := unix.Unlinkat(dirFd, entry, flags); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "remove", Path: p, Err: err}
	}
	return nil
}
