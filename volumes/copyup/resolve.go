package copyup

import (
	"errors"
	"os"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// openat2 retries RESOLVE_IN_ROOT lookups that a concurrent rename made the
// kernel give up on (EAGAIN) this many times.
const openat2Retries = 16

// openInRoot opens unsafePath below the directory rootFd as a directory for
// reading, with chroot semantics for absolute symlinks and "..". It uses
// openat2(RESOLVE_IN_ROOT) and falls back to filepath-securejoin's userspace
// resolver on kernels (or seccomp profiles) without openat2.
func openInRoot(rootFd int, unsafePath string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range openat2Retries {
		fd, err := unix.Openat2(rootFd, unsafePath, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM), errors.Is(err, unix.E2BIG):
			return openInRootFallback(rootFd, unsafePath)
		default:
			return -1, err
		}
	}
	return -1, unix.EAGAIN
}

// openInRootFallback resolves unsafePath with filepath-securejoin, which walks
// it one component at a time with O_PATH|O_NOFOLLOW and checks every step,
// then reopens the result for reading.
func openInRootFallback(rootFd int, unsafePath string) (int, error) {
	dup, err := unix.FcntlInt(uintptr(rootFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	root := os.NewFile(uintptr(dup), "rootfs")
	defer root.Close()

	handle, err := pathrs.OpenatInRoot(root, unsafePath)
	if err != nil {
		return -1, err
	}
	defer handle.Close()

	var st unix.Stat_t
	if err := unix.Fstat(int(handle.Fd()), &st); err != nil {
		return -1, err
	}
	if !isDir(&st) {
		return -1, unix.ENOTDIR
	}
	f, err := pathrs.Reopen(handle, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return -1, err
	}
	// Detach the descriptor from f so that the caller owns it.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	f.Close()
	return fd, err
}
