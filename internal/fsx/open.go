package fsx

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// noOpenat2 is set once openat2 turned out to be unavailable (old kernel or a
// seccomp filter), so later opens go straight to the fallbacks.
var noOpenat2 atomic.Bool

// openat2Retries bounds the retries of an openat2 that a concurrent rename
// made the kernel give up on (EAGAIN).
const openat2Retries = 16

// openat2 opens path below dirfd as how says, retrying EAGAIN and EINTR. It
// returns ok false, and remembers it, when the kernel or a seccomp filter
// has no openat2, so the caller takes its fallback.
func openat2(dirfd int, path string, how *unix.OpenHow) (fd int, ok bool, err error) {
	for range openat2Retries {
		if noOpenat2.Load() {
			return -1, false, nil
		}
		fd, err := unix.Openat2(dirfd, path, how)
		switch {
		case err == nil:
			return fd, true, nil
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM), errors.Is(err, unix.E2BIG):
			noOpenat2.Store(true)
			return -1, false, nil
		default:
			return -1, true, err
		}
	}
	return -1, true, unix.EAGAIN
}

// OpenBeneath opens rel, a relative path of validated names, below dirfd
// without following any symlink and without leaving dirfd. It prefers
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS); without it, it opens one
// component at a time with O_NOFOLLOW, which refuses symlinks just the same
// (securejoin would resolve them inside the root, which the store never
// wants).
func OpenBeneath(dirfd int, rel string, flags int) (int, error) {
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd, ok, err := openat2(dirfd, rel, &unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if ok {
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: rel, Err: err}
		}
		return fd, nil
	}
	parts := strings.Split(rel, "/")
	cur := dirfd
	for i, p := range parts {
		fl := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW
		if i == len(parts)-1 {
			fl = flags
		}
		fd, err := unix.Openat(cur, p, fl, 0)
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat", Path: rel, Err: err}
		}
		cur = fd
	}
	return cur, nil
}

// OpenDir opens rel below dirfd as a directory, refusing symlinks.
func OpenDir(dirfd int, rel string) (int, error) {
	return OpenBeneath(dirfd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
}

// OpenInRoot opens unsafePath below the directory rootFd as a directory for
// reading, with chroot semantics for absolute symlinks and "..": the way a
// container's root file system resolves it. It uses
// openat2(RESOLVE_IN_ROOT) and falls back to filepath-securejoin's userspace
// resolver on kernels (or seccomp profiles) without openat2.
func OpenInRoot(rootFd int, unsafePath string) (int, error) {
	fd, ok, err := openat2(rootFd, unsafePath, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if ok {
		return fd, err
	}
	return openInRootFallback(rootFd, unsafePath)
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

	st, err := Fstat(int(handle.Fd()))
	if err != nil {
		return -1, err
	}
	if !IsDir(&st) {
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

// Lstat is fstatat without following a final symlink.
func Lstat(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return st, &os.PathError{Op: "fstatat", Path: name, Err: err}
	}
	return st, nil
}

// Fstat is fstat returning the result.
func Fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st, err
}

// IsDir reports whether st describes a directory.
func IsDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// ProcPath is the /proc/self/fd magic link of fd, which reaches the file
// open at fd, a symlink opened with O_PATH included, without a parent
// directory.
func ProcPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// reopenDir opens the directory open at fd again, so that a listing has an
// offset and a lifetime of its own. O_NOATIME, where the caller may use it,
// leaves the directory's access time as it was.
func reopenDir(fd int) (int, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	dfd, err := unix.Openat(fd, ".", flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		dfd, err = unix.Openat(fd, ".", flags, 0)
	}
	if err != nil {
		return -1, &os.PathError{Op: "openat", Path: ".", Err: err}
	}
	return dfd, nil
}

// ReadDirNames lists the directory open at fd, through a descriptor of its
// own so that fd's offset and lifetime stay the caller's.
func ReadDirNames(fd int) ([]string, error) {
	dfd, err := reopenDir(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// FirstEntry returns the name of an entry of the directory open at fd, or ""
// when it is empty, through a descriptor of its own.
func FirstEntry(fd int) (string, error) {
	dfd, err := reopenDir(fd)
	if err != nil {
		return "", err
	}
	defer unix.Close(dfd)
	d := NewDirReader(dfd, make([]byte, 1024))
	return d.Next()
}

// IsEmptyDir reports whether the directory open at fd has no entries.
func IsEmptyDir(fd int) (bool, error) {
	name, err := FirstEntry(fd)
	return name == "", err
}

// ReadFile reads name below dir without following a symlink, refusing
// anything but a regular file of at most max bytes. O_NONBLOCK keeps a FIFO
// planted there from blocking the open.
func ReadFile(dir int, name string, max int64) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, max)
	}
	buf := make([]byte, 0, st.Size()+1)
	for {
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return nil, err
		}
		if int64(len(buf)) > max {
			return nil, fmt.Errorf("%s is larger than %d bytes", name, max)
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// Readlink reads the symlink name in dir, whatever its length.
func Readlink(dir int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlinkat", Path: name, Err: err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// Futimens sets the access and modification times of the file open at fd:
// utimensat with a NULL path, which x/sys/unix has no wrapper for.
func Futimens(fd int, atime, mtime unix.Timespec) error {
	ts := [2]unix.Timespec{atime, mtime}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// ForceFallback makes OpenBeneath and OpenInRoot take their fallbacks, as on
// a kernel without openat2, until the returned function is called: for tests
// that must prove the fallbacks as safe as openat2.
func ForceFallback() (restore func()) {
	was := noOpenat2.Swap(true)
	return func() { noOpenat2.Store(was) }
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
