package volumes

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// noOpenat2 is set once openat2 turned out to be unavailable (old kernel or a
// seccomp filter), so later opens go straight to the component walk.
var noOpenat2 atomic.Bool

// openBeneath opens rel, a relative path of validated names, below dirfd
// without following any symlink and without leaving dirfd. It prefers
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS); without it, it opens one
// component at a time with O_NOFOLLOW, which refuses symlinks just the same
// (securejoin would resolve them inside the root, which the store never wants).
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	// openat2 fails with EAGAIN when a rename elsewhere raced with the
	// lookup; after a few tries the component walk does the job.
	for try := 0; try < 3 && !noOpenat2.Load(); try++ {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   uint64(flags),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.E2BIG):
			noOpenat2.Store(true)
		default:
			return -1, &os.PathError{Op: "openat2", Path: rel, Err: err}
		}
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

// OpenPathBeneath opens rel, a clean relative path, below the directory open
// at dir as an O_PATH descriptor, following no symlink (a symlink anywhere on
// the way, the last component included, gives ELOOP) and never leaving dir.
// Whatever is renamed or swapped later, the descriptor stays on the object
// rel named when it was opened: that is what a pin mounts.
func OpenPathBeneath(dir *os.File, rel string) (*os.File, error) {
	if strings.HasPrefix(rel, "/") || slices.Contains(strings.Split(rel, "/"), "..") {
		// openat2 refuses these itself; the component walk must not try.
		return nil, &os.PathError{Op: "open", Path: rel, Err: unix.EXDEV}
	}
	fd, err := openBeneath(int(dir.Fd()), rel, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	st, err := fstat(fd)
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// The component walk without openat2 opens a last symlink itself.
		f.Close()
		return nil, &os.PathError{Op: "open", Path: rel, Err: unix.ELOOP}
	}
	return f, nil
}

// openDir opens rel below dirfd as a directory, refusing symlinks.
func openDir(dirfd int, rel string) (int, error) {
	return openBeneath(dirfd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
}

// lstatAt is fstatat without following a final symlink.
func lstatAt(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return st, &os.PathError{Op: "fstatat", Path: name, Err: err}
	}
	return st, nil
}

func fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st, err
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// readDirNames lists the directory open at fd. It reads through a fresh
// descriptor so that fd's own offset and lifetime stay the caller's.
func readDirNames(fd int) ([]string, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: ".", Err: err}
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// isEmptyDir reports whether the directory open at fd has no entries.
func isEmptyDir(fd int) (bool, error) {
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, &os.PathError{Op: "openat", Path: ".", Err: err}
	}
	f := os.NewFile(uintptr(dfd), ".")
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return false, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return true, nil
}

// removeAllAt removes name below the directory open at parent, recursively,
// with fd-relative calls only and a bounded number of descriptors at any
// depth: a symlink is unlinked, never followed, and a directory on another
// device than dev (a mount) is refused with ErrInUse, not entered.
func removeAllAt(parent int, name string, dev uint64) error {
	return inUseIfMount(fsx.RemoveAll(parent, name, dev))
}

// removeContentsAt empties the directory open at fd, keeping the directory.
func removeContentsAt(fd int, dev uint64) error {
	return inUseIfMount(fsx.RemoveContents(fd, dev))
}

func inUseIfMount(err error) error {
	if errors.Is(err, fsx.ErrOtherFS) {
		return fmt.Errorf("%w: %w", ErrInUse, err)
	}
	return err
}

// createFileAt creates name, which must not exist, in the directory open at
// dir with data; when durable, the file and then the directory are fsynced.
// The caller makes it visible by renaming a directory that holds it.
func createFileAt(dir int, name string, data []byte, durable bool) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || !durable {
		return err
	}
	if err := unix.Fsync(dir); err != nil {
		return &os.PathError{Op: "fsync", Path: ".", Err: err}
	}
	return nil
}

// replaceFileAt replaces name in the directory open at dir with data so that
// a reader, or a process that dies half-way, sees the old or the new content,
// never a mix: it writes a temporary file next to it (Open removes leftovers)
// and renames it over name. It does not fsync: callers use it for state that
// a restart rebuilds.
func replaceFileAt(dir int, name string, data []byte) error {
	tmp := tmpPrefix + randomSuffix()
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: tmp, Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if rerr := unix.Renameat(dir, tmp, dir, name); rerr != nil {
			err = &os.PathError{Op: "renameat", Path: name, Err: rerr}
		}
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
		return err
	}
	return nil
}

// readFileAt reads name below dir without following a symlink, refusing
// anything but a regular file of at most max bytes. O_NONBLOCK keeps a FIFO
// planted in the store from blocking the open.
func readFileAt(dir int, name string, max int64) ([]byte, error) {
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

func randomSuffix() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// mountPoints returns the mount points of this process's mount namespace.
// A bind mount from the same filesystem has the same st_dev, so only the
// mount table finds every kind of mount.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		found = append(found, unescapeMountPath(fields[4]))
	}
	return found, sc.Err()
}

// mountsBelow returns the mount points of mounts that are dir or below it.
func mountsBelow(mounts []string, dir string) []string {
	var found []string
	for _, mp := range mounts {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp)
		}
	}
	return found
}

// unescapeMountPath undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points at dir or below it, from this
// process's mount table.
func mountsUnder(dir string) ([]string, error) {
	all, err := mountPoints()
	if err != nil {
		return nil, err
	}
	return mountsBelow(all, dir), nil
}
