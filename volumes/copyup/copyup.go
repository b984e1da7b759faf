// Package copyup copies a directory of an untrusted container image into an
// empty volume, the way Docker fills a volume the first time it is mounted.
//
// The image is treated as hostile: the target path is resolved as if the
// image's root filesystem were "/", and the tree below it is then walked and
// written only through file descriptors, so that no symlink, ".." or mount in
// the image can make a copy read or write a host file outside the two trees.
//
// Copy holds no shared state; concurrent calls are safe as long as they write
// into different destinations.
package copyup

import (
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// ErrLimit is wrapped by the error Copy returns when the source exceeds one of
// the bounds in Options.
var ErrLimit = errors.New("copy-up limit exceeded")

// ErrNotEmpty is wrapped by the error Copy returns when the destination
// directory already has entries.
var ErrNotEmpty = errors.New("copy-up destination is not empty")

// maxDepth bounds how deep a source tree may nest. Each level holds two open
// descriptors, and no path of a deeper tree fits in PATH_MAX anyway.
const maxDepth = 1024

// Options bounds a copy. A zero field means no bound.
type Options struct {
	// MaxBytes bounds the sum of the apparent sizes of the regular files
	// copied. A negative value allows no bytes at all: only empty files.
	MaxBytes int64
	// MaxFiles bounds the number of entries created: files, directories,
	// symlinks and hard links.
	MaxFiles int64
	// Owners, when set, translates each owner read from the source into the
	// owner written, and the ids in POSIX ACLs and file capabilities. The
	// source of a container with a user namespace shows the ids shifted
	// into the namespace's host range; a volume holds them as the container
	// sees them.
	Owners func(uid, gid uint32) (uint32, uint32)
	// KeepEmptyRoot leaves dst's owner and mode as they are when the source
	// directory is empty: a volume created with an owner or mode keeps them
	// unless the image has content there.
	KeepEmptyRoot bool
	// MaxLinkBytes bounds the memory that remembering hard-linked files
	// takes: the path of the first copy of each inode with several links,
	// so that its other names become links to it. See DefaultMaxLinkBytes.
	MaxLinkBytes int64
	// Log, when set, gets at debug level what the copy leaves out and why;
	// without it, nothing is logged.
	Log *logrus.Entry
}

// log is where a copy with opts logs.
func (o *Options) log() *logrus.Entry {
	if o.Log != nil {
		return o.Log
	}
	return discard
}

// discard is the logger of a copy that was given none.
var discard = func() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}()

// DefaultMaxLinkBytes is the MaxLinkBytes the copy-up hook uses: room for
// several hundred thousand hard-linked files, far more than images hold.
const DefaultMaxLinkBytes = 64 << 20

// linkRecordBytes is what one remembered inode costs besides its path: the
// map's key, the string header and the map's own overhead, roughly.
const linkRecordBytes = 64

// Stats counts what a copy did.
type Stats struct {
	Files     int64 // regular files written
	Dirs      int64 // directories created below the destination
	Symlinks  int64 // symlinks created
	Hardlinks int64 // hard links made to a file copied earlier
	Skipped   int64 // device nodes, fifos, sockets and other mounts left out
	Bytes     int64 // apparent size of the regular files written
}

// Copy copies the directory at target, an absolute path inside the container,
// of the root filesystem rootfs into the existing, empty directory dst. Owners,
// modes, times and extended attributes are kept; symlinks are copied as
// symlinks and hard links within the tree as hard links; sparse files stay
// sparse. Device nodes, fifos, sockets and directories on another mount are
// skipped and counted in Stats.Skipped. dst itself takes the owner, mode,
// times and extended attributes of the source directory.
//
// If target does not exist in rootfs, or is not a directory, Copy copies
// nothing and returns (Stats{}, nil). If dst is not empty the error wraps
// ErrNotEmpty; if the source exceeds opts it wraps ErrLimit. When Copy fails
// part-way it removes what it created, leaving dst empty.
func Copy(rootfs, target, dst string, opts Options) (Stats, error) {
	dstFd, err := openDest(dst)
	if err != nil {
		return Stats{}, err
	}
	defer unix.Close(dstFd)
	var dstSt unix.Stat_t
	if err := unix.Fstat(dstFd, &dstSt); err != nil {
		return Stats{}, &pathError{op: "stat", path: dst, err: err}
	}

	srcFd, st, err := openSource(rootfs, target)
	if errors.Is(err, errNotInImage) {
		opts.log().WithField("target", target).Debugf("copy-up: nothing to copy: %v", err)
		return Stats{}, nil
	}
	if err != nil {
		return Stats{}, fmt.Errorf("open %q in %q: %w", target, rootfs, err)
	}
	defer unix.Close(srcFd)

	if !fsx.IsDir(&st) {
		return Stats{}, nil
	}
	if opts.KeepEmptyRoot {
		empty, err := fsx.IsEmptyDir(srcFd)
		if err != nil {
			return Stats{}, fmt.Errorf("list %q in %q: %w", target, rootfs, err)
		}
		if empty {
			return Stats{}, nil
		}
	}

	c := newCopier(target, st.Dev, devIno{uint64(dstSt.Dev), dstSt.Ino}, opts)
	if err := c.run(srcFd, dstFd, &st); err != nil {
		rmErr := errors.Join(fsx.RemoveContents(dstFd, dstSt.Dev), fsx.SetOwnerModeTimes(dstFd, &dstSt))
		if rmErr != nil {
			err = errors.Join(err, fmt.Errorf("clean up %q: %w", dst, rmErr))
		}
		return c.stats, err
	}
	return c.stats, nil
}

// SourceID identifies a source directory.
type SourceID struct{ Dev, Ino uint64 }

// Found is what Source found at a target.
type Found struct {
	// ID identifies the directory, so that a caller copies one image
	// directory once however many targets name it.
	ID SourceID
	// Dir is false when Copy would copy nothing: nothing there, not a
	// directory, or another mount.
	Dir bool
	// Bare says the directory is empty, owned by root as the container
	// sees it, of mode 0755 and without extended attributes: what runc
	// makes for a mount point the image lacks. Copying it gives the
	// destination that owner and mode and nothing else.
	Bare bool
	// Covered says another mount is at the target on the host: Copy copies
	// nothing, but what the image holds beneath is unknown.
	Covered bool
}

// Source tells what Copy would copy for target in rootfs. owners, if not
// nil, translates the owner read from rootfs into the one the container
// sees, as Options.Owners does.
func Source(rootfs, target string, owners func(uid, gid uint32) (uint32, uint32)) (Found, error) {
	fd, st, err := openSource(rootfs, target)
	if errors.Is(err, errNotInImage) {
		return Found{Covered: errors.Is(err, errOtherMount)}, nil
	}
	if err != nil {
		return Found{}, fmt.Errorf("open %q in %q: %w", target, rootfs, err)
	}
	defer unix.Close(fd)
	found := Found{ID: SourceID{uint64(st.Dev), st.Ino}, Dir: fsx.IsDir(&st)}
	if !found.Dir {
		return found, nil
	}
	if found.Bare, err = bare(fd, &st, owners); err != nil {
		return Found{}, fmt.Errorf("list %q in %q: %w", target, rootfs, err)
	}
	return found, nil
}

// bare reports whether the directory open at fd, whose stat is st, is a
// bare mount point (see Found.Bare).
func bare(fd int, st *unix.Stat_t, owners func(uid, gid uint32) (uint32, uint32)) (bool, error) {
	uid, gid := st.Uid, st.Gid
	if owners != nil {
		uid, gid = owners(uid, gid)
	}
	if uid != 0 || gid != 0 || st.Mode&0o7777 != 0o755 {
		return false, nil
	}
	n, err := unix.Flistxattr(fd, nil)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	return fsx.IsEmptyDir(fd)
}

// openDest opens dst, which must be an empty directory.
func openDest(dst string) (int, error) {
	// O_NOATIME: looking into dst when there is nothing to copy leaves it as
	// it was.
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Open(dst, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Open(dst, flags, 0)
	}
	if err != nil {
		return -1, &pathError{op: "open", path: dst, err: err}
	}
	name, err := fsx.FirstEntry(fd)
	if err == nil && name != "" {
		err = fmt.Errorf("%w: it holds %q", ErrNotEmpty, name)
	}
	if err != nil {
		unix.Close(fd)
		return -1, &pathError{op: "open", path: dst, err: err}
	}
	return fd, nil
}

// errNotInImage is openSource's error for a target that has nothing of the
// image to copy.
var errNotInImage = errors.New("no directory of the image there")

// errOtherMount is openSource's error, beside errNotInImage, for a target
// that is a mount point on the host.
var errOtherMount = errors.New("the target is on another mount")

// openSource opens target inside rootfs as a directory, resolving every
// symlink and ".." in it as if rootfs were the root directory. Its error
// wraps errNotInImage when target does not exist, is not a directory or is a
// mount point of its own; it returns the directory's stat, taken to tell
// that, so callers need not take it again.
func openSource(rootfs, target string) (int, unix.Stat_t, error) {
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, unix.Stat_t{}, err
	}
	defer unix.Close(rootFd)

	fd, err := fsx.OpenInRoot(rootFd, target)
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return -1, unix.Stat_t{}, fmt.Errorf("%w: %w", errNotInImage, err)
	case err != nil:
		return -1, unix.Stat_t{}, err
	}

	// A target that is a mount point on the host is no part of the image.
	var rootSt, st unix.Stat_t
	if err := unix.Fstat(rootFd, &rootSt); err != nil {
		unix.Close(fd)
		return -1, unix.Stat_t{}, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, unix.Stat_t{}, err
	}
	if st.Dev != rootSt.Dev {
		unix.Close(fd)
		return -1, unix.Stat_t{}, fmt.Errorf("%w: %w", errNotInImage, errOtherMount)
	}
	return fd, st, nil
}

// pathError is an error about one path, named in the message.
type pathError struct {
	op, path string
	err      error
}

func (e *pathError) Error() string { return fmt.Sprintf("%s %q: %s", e.op, e.path, e.err) }
func (e *pathError) Unwrap() error { return e.err }

// limitError builds the error for a bound in Options that the source exceeds.
func limitError(field string, limit int64, unit string) error {
	return fmt.Errorf("%w: the source holds more than %d %s (%s)", ErrLimit, limit, unit, field)
}

// joinRel joins a name to a path relative to the copy's root.
func joinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

// containerPath names an entry as the container would see it, for messages.
func (c *copier) containerPath(rel string) string { return path.Join("/", c.target, rel) }
