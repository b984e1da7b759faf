// Package fsx is the one home of nri-volumes' file-system primitives, used
// by the store, copy-up, export/import and the test harness: opening a path
// beneath a directory or inside a container's root (openat2 with a safe
// fallback), listing a directory, removing a tree, measuring its usage,
// copying owners, modes, times and extended attributes, and reading the mount
// table. Every call is descriptor-relative and never follows a symlink it was
// not asked to resolve. The walks never leave the file system they start on
// (they cross into a btrfs subvolume nested in it, never into a mount) and
// hold a bounded number of descriptors however deep the tree is, so a
// container that nests directories deeper than the process's RLIMIT_NOFILE
// cannot make a walk fail half-way.
//
// The functions hold no shared state but a flag that remembers a kernel
// without openat2, and are safe for concurrent use on different trees.
package fsx

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxHeld bounds the directory descriptors a walk keeps open below its
// starting directory. Deeper levels are closed and reopened through ".."
// when the walk climbs back, checked by device and inode.
const MaxHeld = 16

// ErrOtherFS is wrapped by the error of a walk that met a directory on
// another device than the one it was told to stay on: a mount.
var ErrOtherFS = errors.New("on another filesystem (a mount)")

// ErrMoved is wrapped by the error of a walk whose directory was moved while
// the walk had it closed: its ".." is no longer the parent the walk came from.
var ErrMoved = errors.New("directory moved during the walk")

type ident struct{ dev, ino uint64 }

// level is one directory on the path from the walk's start to where it is.
type level struct {
	name  string // its name in the parent; "" for the start
	id    ident
	fd    int // -1 while closed to bound descriptors
	rd    DirReader
	dirty bool // an entry was removed since the listing last started over
}

// walk is a depth-first walk that keeps at most MaxHeld descriptors open
// besides the one of its start. The open levels are always the deepest ones.
type walk struct {
	// mnt is the mount ID of the start when it is on btrfs, whose nested
	// subvolumes the walk enters (each has a device number of its own);
	// 0 otherwise.
	mnt   uint64
	stack []*level
	held  int // open levels above the start
	bufs  DirBufs
}

// start begins a walk at the directory open at fd, through a descriptor of
// its own so that fd's offset and lifetime stay the caller's.
func start(fd int, dev uint64) (*walk, error) {
	own, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: ".", Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(own, &st); err != nil {
		unix.Close(own)
		return nil, &os.PathError{Op: "fstat", Path: ".", Err: err}
	}
	if st.Dev != dev {
		unix.Close(own)
		return nil, fmt.Errorf("directory is %w", ErrOtherFS)
	}
	w := &walk{mnt: btrfsMount(own)}
	w.stack = []*level{{id: ident{st.Dev, st.Ino}, fd: own, rd: DirReader{fd: own, buf: w.bufs.Get()}}}
	return w, nil
}

func (w *walk) close() {
	for _, l := range w.stack {
		if l.fd >= 0 {
			unix.Close(l.fd)
		}
	}
	w.stack = nil
}

func (w *walk) top() *level { return w.stack[len(w.stack)-1] }

// path names the entry name of the current directory relative to the start,
// for messages.
func (w *walk) path(name string) string {
	parts := make([]string, 0, len(w.stack))
	for _, l := range w.stack[1:] {
		parts = append(parts, l.name)
	}
	if name != "" {
		parts = append(parts, name)
	}
	if len(parts) == 0 {
		return "."
	}
	return strings.Join(parts, "/")
}

// descend enters the directory name of the current one. It refuses a
// directory on another device.
func (w *walk) descend(name string) error {
	parent := w.top()
	fd, err := unix.Openat(parent.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: w.path(name), Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return &os.PathError{Op: "fstat", Path: w.path(name), Err: err}
	}
	if !w.inside(&st, fd, "") {
		unix.Close(fd)
		return fmt.Errorf("%q is %w", w.path(name), ErrOtherFS)
	}
	w.stack = append(w.stack, &level{name: name, id: ident{st.Dev, st.Ino}, fd: fd, rd: DirReader{fd: fd, buf: w.bufs.Get()}})
	w.held++
	if w.held > MaxHeld {
		// Close the shallowest open level; its listing resumes at its offset.
		l := w.stack[len(w.stack)-w.held]
		unix.Close(l.fd)
		l.fd = -1
		w.bufs.Put(l.rd.buf)
		l.rd.buf = nil
		w.held--
	}
	return nil
}

// ascend leaves the current directory for its parent, reopening the parent
// through ".." if the walk had closed it, and returns the name of the
// directory it left.
func (w *walk) ascend() (string, error) {
	child := w.top()
	parent := w.stack[len(w.stack)-2]
	if parent.fd < 0 {
		fd, err := unix.Openat(child.fd, "..", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", &os.PathError{Op: "openat", Path: w.path(".."), Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return "", &os.PathError{Op: "fstat", Path: w.path(".."), Err: err}
		}
		if (ident{st.Dev, st.Ino}) != parent.id {
			unix.Close(fd)
			return "", fmt.Errorf("%q: %w", w.path(""), ErrMoved)
		}
		if err := parent.rd.reopen(fd, w.bufs.Get()); err != nil {
			unix.Close(fd)
			return "", &os.PathError{Op: "lseek", Path: w.path(".."), Err: err}
		}
		parent.fd = fd
		w.held++
	}
	unix.Close(child.fd)
	w.bufs.Put(child.rd.buf)
	w.stack = w.stack[:len(w.stack)-1]
	w.held--
	return child.name, nil
}

// RemoveAll removes name below the directory open at parent, recursively. A
// symlink is unlinked, never followed; a directory on another device than
// dev is refused with an error wrapping ErrOtherFS, unless it is a btrfs
// subvolume nested in the tree, which is emptied and deleted like a
// directory (depth first: rmdir deletes an empty subvolume). A missing name
// is no error.
func RemoveAll(parent int, name string, dev uint64) error {
	var st unix.Stat_t
	err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "fstatat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(parent, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "unlinkat", Path: name, Err: err}
		}
		return nil
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return &os.PathError{Op: "fstat", Path: name, Err: err}
	}
	if st.Dev != dev {
		if !NestedSubvolume(parent, fd, &st) {
			unix.Close(fd)
			return fmt.Errorf("%q is %w", name, ErrOtherFS)
		}
		if err := makeWritable(fd); err != nil {
			unix.Close(fd)
			return &os.PathError{Op: "make btrfs subvolume writable", Path: name, Err: err}
		}
	}
	err = RemoveContents(fd, st.Dev)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := unix.Unlinkat(parent, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	return nil
}

// RemoveContents empties the directory open at fd, keeping the directory,
// with the guarantees of RemoveAll.
func RemoveContents(fd int, dev uint64) error {
	w, err := start(fd, dev)
	if err != nil {
		return err
	}
	defer w.close()
	for {
		top := w.top()
		name, err := top.rd.Next()
		if err != nil {
			return &os.PathError{Op: "getdents", Path: w.path(""), Err: err}
		}
		if name != "" {
			err := unix.Unlinkat(top.fd, name, 0)
			switch {
			case err == nil:
				top.dirty = true
			case errors.Is(err, unix.ENOENT):
			case errors.Is(err, unix.EISDIR):
				if err := w.descend(name); err != nil && !errors.Is(err, unix.ENOENT) {
					return err
				}
				if err := w.writableSubvolume(); err != nil {
					return err
				}
			default:
				return &os.PathError{Op: "unlinkat", Path: w.path(name), Err: err}
			}
			continue
		}
		// The listing is at its end. Removing entries while listing may
		// make it miss some, so a directory that lost entries is listed
		// again before it counts as empty.
		if top.dirty {
			if err := top.rd.Rewind(); err != nil {
				return &os.PathError{Op: "lseek", Path: w.path(""), Err: err}
			}
			top.dirty = false
			continue
		}
		if len(w.stack) == 1 {
			return nil
		}
		child, err := w.ascend()
		if err != nil {
			return err
		}
		parent := w.top()
		if err := unix.Unlinkat(parent.fd, child, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "unlinkat", Path: w.path(child), Err: err}
		}
		parent.dirty = true
	}
}

// DiskUsage adds up the blocks used below the directory open at fd, like du:
// lstat only, never following a symlink, never entering another device than
// dev but a nested btrfs subvolume (a mount point counts, its content does
// not), and counting an inode with several links once.
func DiskUsage(fd int, dev uint64) (int64, error) {
	seen := map[ident]struct{}{}
	var total int64
	err := visit(fd, dev, func(w *walk, name string, st *unix.Stat_t) (bool, error) {
		dir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if st.Nlink > 1 && !dir {
			k := ident{st.Dev, st.Ino}
			if _, ok := seen[k]; ok {
				return false, nil
			}
			seen[k] = struct{}{}
		}
		total += st.Blocks * 512
		return dir && w.inside(st, w.top().fd, name), nil
	})
	return total, err
}

// ErrTooMany is wrapped by the error of Count for a tree with more entries
// than it was allowed to look at.
var ErrTooMany = errors.New("more entries than allowed")

// ErrSpecial is wrapped by the error of Count for a tree that holds a device
// node, a fifo or a socket.
var ErrSpecial = errors.New("a device node, fifo or socket")

// Tally is what Count found below a directory.
type Tally struct {
	// Entries counts every name: directories, regular files, symlinks,
	// and each further name of a hard-linked file.
	Entries int64
	// Files and Bytes count the regular files and their apparent sizes,
	// an inode with several names once.
	Files, Bytes int64
}

// Count tallies the tree below the directory open at fd, with the walk of
// DiskUsage: lstat only, a bounded number of descriptors. It stops with an
// error wrapping ErrTooMany once it has seen maxEntries entries and there
// are more, ErrOtherFS at a directory on another device than dev, and
// ErrSpecial at anything but a directory, regular file or symlink.
func Count(fd int, dev uint64, maxEntries int64) (Tally, error) {
	var t Tally
	seen := map[ident]struct{}{}
	err := visit(fd, dev, func(w *walk, name string, st *unix.Stat_t) (bool, error) {
		if t.Entries >= maxEntries {
			return false, fmt.Errorf("%q: %w (%d)", w.path(name), ErrTooMany, maxEntries)
		}
		t.Entries++
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if !w.inside(st, w.top().fd, name) {
				return false, fmt.Errorf("%q is %w", w.path(name), ErrOtherFS)
			}
			return true, nil
		case unix.S_IFREG:
			if st.Nlink > 1 {
				k := ident{st.Dev, st.Ino}
				if _, ok := seen[k]; ok {
					return false, nil
				}
				seen[k] = struct{}{}
			}
			t.Files++
			t.Bytes += st.Size
		case unix.S_IFLNK:
		default:
			return false, fmt.Errorf("%q is %w", w.path(name), ErrSpecial)
		}
		return false, nil
	})
	return t, err
}

// visit walks the tree below the directory open at fd depth first and
// calls fn with each entry's lstat; it enters a directory when fn returns
// true for it (it refuses one on another device than dev). An entry gone
// before its lstat is skipped.
func visit(fd int, dev uint64, fn func(w *walk, name string, st *unix.Stat_t) (bool, error)) error {
	w, err := start(fd, dev)
	if err != nil {
		return err
	}
	defer w.close()
	for {
		top := w.top()
		name, err := top.rd.Next()
		if err != nil {
			return &os.PathError{Op: "getdents", Path: w.path(""), Err: err}
		}
		if name == "" {
			if len(w.stack) == 1 {
				return nil
			}
			if _, err := w.ascend(); err != nil {
				return err
			}
			continue
		}
		var st unix.Stat_t
		err = unix.Fstatat(top.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fstatat", Path: w.path(name), Err: err}
		}
		enter, err := fn(w, name, &st)
		if err != nil {
			return err
		}
		if !enter {
			continue
		}
		if err := w.descend(name); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
}
