package copyup

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
)

// errChanged reports a source entry that is not what its directory listing
// said it was when it was opened.
var errChanged = errors.New("source changed during copy")

// devIno identifies an inode, to find the other names of a hard-linked file.
type devIno struct{ dev, ino uint64 }

// frame is a directory being copied: the walk keeps one per level.
type frame struct {
	src  fsx.DirReader // the source directory, listed a batch at a time
	dst  int           // the directory created for it
	st   unix.Stat_t   // the source directory's attributes, applied to dst last
	name string        // its name in the parent; "" for the root
	rel  string        // its path below the root, for hard links and messages
}

// copier holds the state of one Copy.
type copier struct {
	target  string
	rootDev uint64
	dst     devIno // the destination root, should the source hold it
	opts    Options
	stats   Stats
	entries int64             // entries created, for MaxFiles
	links   map[devIno]string // first copy of each multiply-linked file
	linkMem int64             // bytes links takes, for MaxLinkBytes
	stack   []frame
	dirBufs fsx.DirBufs   // directory buffers of popped frames, for reuse
	xnames  []byte        // xattr name list buffer
	xvalue  []byte        // xattr value buffer
	data    snapfs.Copier // copies file data; remembers whether copy_file_range works between these trees
}

func newCopier(target string, rootDev uint64, dst devIno, opts Options) *copier {
	return &copier{
		target:  target,
		rootDev: rootDev,
		dst:     dst,
		opts:    opts,
		links:   make(map[devIno]string),
	}
}

// run copies the tree below srcFd into dstFd, depth first, and finally gives
// dstFd the attributes st of the source directory.
func (c *copier) run(srcFd, dstFd int, st *unix.Stat_t) error {
	c.stack = append(c.stack, frame{src: fsx.NewDirReader(srcFd, c.dirBufs.Get()), dst: dstFd, st: *st})
	defer c.closeFrames()
	for len(c.stack) > 0 {
		top := &c.stack[len(c.stack)-1]
		name, err := top.src.Next()
		if err != nil {
			return fmt.Errorf("list %q: %w", c.containerPath(top.rel), err)
		}
		if name == "" {
			if err := c.finishDir(); err != nil {
				return err
			}
			continue
		}
		// entry may push a frame, which invalidates top.
		parent, rel := *top, joinRel(top.rel, name)
		if err := c.entry(&parent, name, rel); err != nil {
			return fmt.Errorf("copy %q: %w", c.containerPath(rel), err)
		}
	}
	return nil
}

// finishDir applies the attributes of the directory on top of the stack to
// its copy, now that its content is written, and pops it.
func (c *copier) finishDir() error {
	n := len(c.stack) - 1
	f := &c.stack[n]
	err := c.setAttrs(f.src.Fd(), f.dst, &f.st)
	if err == nil {
		if n == 0 {
			err = fsx.SetTimes(f.dst, &f.st)
		} else {
			err = setTimesAt(c.stack[n-1].dst, f.name, &f.st)
		}
	}
	if err != nil {
		return fmt.Errorf("copy %q: %w", c.containerPath(f.rel), err)
	}
	if n > 0 {
		unix.Close(f.src.Fd())
		unix.Close(f.dst)
	}
	c.dirBufs.Put(f.src.Buf())
	c.stack = c.stack[:n]
	return nil
}

// closeFrames closes the descriptors of the frames left after an error. The
// root frame's descriptors belong to Copy.
func (c *copier) closeFrames() {
	for i := len(c.stack) - 1; i > 0; i-- {
		unix.Close(c.stack[i].src.Fd())
		unix.Close(c.stack[i].dst)
	}
	c.stack = nil
}

// entry copies one entry of the directory parent.
func (c *copier) entry(parent *frame, name, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(parent.src.Fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return c.dir(parent, name, &st, rel)
	case unix.S_IFREG:
		return c.file(parent, name, &st)
	case unix.S_IFLNK:
		return c.symlink(parent, name, &st)
	default:
		c.skip(rel, "not a regular file, directory or symlink")
		return nil
	}
}

func (c *copier) skip(rel, why string) {
	c.stats.Skipped++
	c.opts.log().WithField("path", c.containerPath(rel)).Debugf("copy-up: skipped: %s", why)
}

// create counts one more entry against MaxFiles.
func (c *copier) create() error {
	if c.opts.MaxFiles > 0 && c.entries >= c.opts.MaxFiles {
		return limitError("MaxFiles", c.opts.MaxFiles, "entries")
	}
	c.entries++
	return nil
}

func (c *copier) dir(parent *frame, name string, st *unix.Stat_t, rel string) error {
	if st.Dev != c.rootDev {
		c.skip(rel, "on another mount")
		return nil
	}
	if st.Dev == c.dst.dev && st.Ino == c.dst.ino {
		// Never copy the destination into itself.
		c.skip(rel, "the destination itself")
		return nil
	}
	if len(c.stack) >= maxDepth {
		return fmt.Errorf("%w: directories nest deeper than %d levels", ErrLimit, maxDepth)
	}
	if err := c.create(); err != nil {
		return err
	}
	src, err := unix.Openat(parent.src.Fd(), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := sameInode(src, st); err != nil {
		unix.Close(src)
		return err
	}
	// Owner-only until finishDir applies the real mode after the content.
	if err := unix.Mkdirat(parent.dst, name, 0o700); err != nil {
		unix.Close(src)
		return err
	}
	dst, err := unix.Openat(parent.dst, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(src)
		return err
	}
	c.stats.Dirs++
	c.stack = append(c.stack, frame{src: fsx.NewDirReader(src, c.dirBufs.Get()), dst: dst, st: *st, name: name, rel: rel})
	return nil
}

// sameInode checks that fd, just opened by name, is the inode st described.
func sameInode(fd int, st *unix.Stat_t) error {
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		return err
	}
	if got.Dev != st.Dev || got.Ino != st.Ino || got.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		return errChanged
	}
	*st = got
	return nil
}

func (c *copier) file(parent *frame, name string, st *unix.Stat_t) error {
	if done, err := c.hardlink(parent, name, st); done || err != nil {
		return err
	}
	if err := c.create(); err != nil {
		return err
	}
	// O_NONBLOCK and O_NOCTTY make opening harmless should the name have been
	// swapped for a fifo or device since it was listed; sameInode catches it.
	src, err := unix.Openat(parent.src.Fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if err := sameInode(src, st); err != nil {
		return err
	}
	if c.opts.MaxBytes != 0 && st.Size > max(c.opts.MaxBytes, 0)-c.stats.Bytes {
		return limitError("MaxBytes", max(c.opts.MaxBytes, 0), "bytes")
	}
	dst, err := unix.Openat(parent.dst, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	c.stats.Files++
	c.stats.Bytes += st.Size
	if err := c.data.CopyData(dst, src, st); err != nil {
		return err
	}
	if err := c.setAttrs(src, dst, st); err != nil {
		return err
	}
	if err := setTimesAt(parent.dst, name, st); err != nil {
		return err
	}
	return c.remember(parent, name, st)
}

// remember records where an inode with several links was copied, so its
// other names become hardlinks to the copy. Only such inodes are kept, and
// no more of them than MaxLinkBytes allows.
func (c *copier) remember(parent *frame, name string, st *unix.Stat_t) error {
	if st.Nlink <= 1 {
		return nil
	}
	rel := joinRel(parent.rel, name)
	cost := int64(len(rel)) + linkRecordBytes
	if c.opts.MaxLinkBytes > 0 && c.linkMem+cost > c.opts.MaxLinkBytes {
		return fmt.Errorf("%w: the source's hard-linked files need more than %d bytes to track (MaxLinkBytes)", ErrLimit, c.opts.MaxLinkBytes)
	}
	c.links[devIno{uint64(st.Dev), st.Ino}] = rel
	c.linkMem += cost
	return nil
}

// hardlink links name in parent's copy to the copy of an inode met before
// under another name, and reports whether it did.
func (c *copier) hardlink(parent *frame, name string, st *unix.Stat_t) (bool, error) {
	if st.Nlink <= 1 {
		return false, nil
	}
	first, ok := c.links[devIno{uint64(st.Dev), st.Ino}]
	if !ok {
		return false, nil
	}
	if err := c.create(); err != nil {
		return true, err
	}
	dirRel, base := "", first
	if i := strings.LastIndexByte(first, '/'); i >= 0 {
		dirRel, base = first[:i], first[i+1:]
	}
	dir := parent.dst
	if dirRel != parent.rel {
		fd, err := c.openDestDir(dirRel)
		if err != nil {
			return true, err
		}
		defer unix.Close(fd)
		dir = fd
	}
	if err := unix.Linkat(dir, base, parent.dst, name, 0); err != nil {
		return true, err
	}
	c.stats.Hardlinks++
	return true, nil
}

// openDestDir opens rel, a directory below the destination root ("" for the
// root), without following symlinks.
func (c *copier) openDestDir(rel string) (int, error) {
	if rel == "" {
		return unix.FcntlInt(uintptr(c.stack[0].dst), unix.F_DUPFD_CLOEXEC, 0)
	}
	return fsx.OpenBeneath(c.stack[0].dst, rel, unix.O_PATH|unix.O_DIRECTORY)
}

func (c *copier) symlink(parent *frame, name string, st *unix.Stat_t) error {
	if done, err := c.hardlink(parent, name, st); done || err != nil {
		return err
	}
	if err := c.create(); err != nil {
		return err
	}
	target, err := fsx.Readlink(parent.src.Fd(), name)
	if err != nil {
		return err
	}
	if err := unix.Symlinkat(target, parent.dst, name); err != nil {
		return err
	}
	c.stats.Symlinks++
	uid, gid := c.owner(st)
	if err := unix.Fchownat(parent.dst, name, int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if err := c.symlinkXattrs(parent, name, st); err != nil {
		return err
	}
	if err := setTimesAt(parent.dst, name, st); err != nil {
		return err
	}
	return c.remember(parent, name, st)
}

// symlinkXattrs copies the extended attributes of a symlink. A symlink
// cannot be opened for reading, so both ends are reached through O_PATH
// descriptors and their /proc/self/fd magic links, which resolve to the
// symlink itself.
func (c *copier) symlinkXattrs(parent *frame, name string, st *unix.Stat_t) error {
	src, err := unix.Openat(parent.src.Fd(), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if err := sameInode(src, st); err != nil {
		return err
	}
	names, err := c.listXattrs(func(b []byte) (int, error) { return unix.Listxattr(fsx.ProcPath(src), b) })
	if err != nil || len(names) == 0 {
		return err
	}
	dst, err := unix.Openat(parent.dst, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	srcPath, dstPath := fsx.ProcPath(src), fsx.ProcPath(dst)
	return c.copyXattrList(names,
		func(attr string, b []byte) (int, error) { return unix.Getxattr(srcPath, attr, b) },
		func(attr string, v []byte) error { return unix.Setxattr(dstPath, attr, v, 0) })
}

// owner is the owner a copy of the source entry st gets.
func (c *copier) owner(st *unix.Stat_t) (uint32, uint32) {
	if c.opts.Owners == nil {
		return st.Uid, st.Gid
	}
	return c.opts.Owners(st.Uid, st.Gid)
}

// setAttrs gives dst the owner, mode and extended attributes of src. The mode
// is set after the owner because chown clears the setuid and setgid bits, and
// the extended attributes after both because chown also drops file
// capabilities.
func (c *copier) setAttrs(src, dst int, st *unix.Stat_t) error {
	uid, gid := c.owner(st)
	if err := unix.Fchown(dst, int(uid), int(gid)); err != nil {
		return err
	}
	if err := unix.Fchmod(dst, st.Mode&0o7777); err != nil {
		return err
	}
	names, err := c.listXattrs(func(b []byte) (int, error) { return unix.Flistxattr(src, b) })
	if err != nil || len(names) == 0 {
		return err
	}
	return c.copyXattrList(names,
		func(attr string, b []byte) (int, error) { return unix.Fgetxattr(src, attr, b) },
		func(attr string, v []byte) error { return unix.Fsetxattr(dst, attr, v, 0) })
}

// listXattrs returns the NUL-separated names list returns, or nothing when
// the source file system has no extended attributes.
func (c *copier) listXattrs(list func([]byte) (int, error)) ([]byte, error) {
	if c.xnames == nil {
		c.xnames = make([]byte, 4096)
	}
	for {
		n, err := list(c.xnames)
		switch {
		case err == nil:
			return c.xnames[:n], nil
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case errors.Is(err, unix.ERANGE):
			size, err := list(nil)
			if err != nil {
				return nil, fmt.Errorf("list xattrs: %w", err)
			}
			c.xnames = make([]byte, size+256)
		default:
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
	}
}

// copyXattrList copies the named attributes. An attribute the destination
// file system does not support is left out; any other failure is an error.
func (c *copier) copyXattrList(names []byte, get func(string, []byte) (int, error), set func(string, []byte) error) error {
	if c.xvalue == nil {
		c.xvalue = make([]byte, 4096)
	}
	for _, nb := range bytes.Split(names, []byte{0}) {
		if len(nb) == 0 {
			continue
		}
		attr := string(nb)
		n, err := get(attr, c.xvalue)
		if errors.Is(err, unix.ERANGE) {
			var size int
			if size, err = get(attr, nil); err == nil {
				c.xvalue = make([]byte, size+256)
				n, err = get(attr, c.xvalue)
			}
		}
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get xattr %q: %w", attr, err)
		}
		value := c.xvalue[:n]
		if c.opts.Owners != nil {
			value = mapXattr(c.opts.Owners, attr, value)
		}
		if err := set(attr, value); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("set xattr %q: %w", attr, err)
		}
	}
	return nil
}

func timespecs(st *unix.Stat_t) []unix.Timespec { return []unix.Timespec{st.Atim, st.Mtim} }

// setTimesAt sets the times of name in dir without following a symlink.
func setTimesAt(dir int, name string, st *unix.Stat_t) error {
	return unix.UtimesNanoAt(dir, name, timespecs(st), unix.AT_SYMLINK_NOFOLLOW)
}
