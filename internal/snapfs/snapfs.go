// Package snapfs holds the primitives of a point-in-time copy: freezing the
// file system of a descriptor (FIFREEZE/FITHAW), and cloning a file, as a
// reflink (FICLONE) where the file system shares extents, otherwise as a
// sparse-aware copy (SEEK_DATA/SEEK_HOLE). It works only on descriptors it is
// handed and holds no state but a Copier's; its functions are safe for
// concurrent use.
package snapfs

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// The ioctls of linux/fs.h: _IOWR('X', 119, int) and _IOWR('X', 120, int).
// x/sys/unix does not define them.
const (
	fiFreeze = 0xC0045877
	fiThaw   = 0xC0045878
)

// ErrNotFrozen is wrapped by the error of Thaw when the file system was not
// frozen: the kernel's EINVAL.
var ErrNotFrozen = errors.New("file system is not frozen")

// Freeze freezes the file system that holds the file open at fd: the kernel
// writes back its dirty data and journal, and every writer blocks until
// Thaw. What a reader of its block device sees then is a consistent file
// system, as after a clean unmount. It needs CAP_SYS_ADMIN.
func Freeze(fd int) error {
	if err := ioctl(fd, fiFreeze); err != nil {
		return fmt.Errorf("FIFREEZE: %w", err)
	}
	return nil
}

// Thaw thaws the file system that holds the file open at fd. A file system
// that is not frozen gives an error wrapping ErrNotFrozen.
func Thaw(fd int) error {
	err := ioctl(fd, fiThaw)
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("FITHAW: %w", ErrNotFrozen)
	}
	if err != nil {
		return fmt.Errorf("FITHAW: %w", err)
	}
	return nil
}

func ioctl(fd int, req uintptr) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// Method says how CloneFile copied a file.
type Method string

// The methods of CloneFile.
const (
	// Reflink: the copy shares the source's extents (FICLONE), in O(1).
	Reflink Method = "reflink"
	// SparseCopy: the data extents were copied, holes left holes.
	SparseCopy Method = "copy"
)

// CloneFile makes the empty regular file open at dst a copy of the regular
// file open at src: a reflink where both are on one file system that shares
// extents (xfs with reflink=1, btrfs), otherwise a copy of src's data
// extents, so a sparse file stays sparse. It does not sync dst.
func CloneFile(dst, src int) (Method, error) {
	err := ReflinkFile(dst, src)
	if err == nil {
		return Reflink, nil
	}
	if !errors.Is(err, ErrNoReflink) {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return "", fmt.Errorf("fstat: %w", err)
	}
	var c Copier
	if err := c.CopyData(dst, src, &st); err != nil {
		return "", err
	}
	return SparseCopy, nil
}

// Copier copies the data of regular files, keeping their holes. It
// remembers, for the files that follow, that copy_file_range cannot copy
// between their two file systems, and reuses its buffer. The zero Copier is
// ready for use; one Copier is not safe for concurrent use.
type Copier struct {
	// NoCopyFileRange makes it copy with pread/pwrite alone. It sets it
	// itself once the kernel refuses copy_file_range.
	NoCopyFileRange bool
	buf             []byte
}

const (
	// cfrChunk bounds one copy_file_range call, so a huge file is copied in
	// steps that a signal can interrupt.
	cfrChunk = 1 << 30
	// rwBufSize is the buffer of the pread/pwrite fallback.
	rwBufSize = 1 << 20
)

// CopyData copies the st.Size bytes of the regular file src, whose stat st
// is, to the same offsets of the empty file dst. A file with fewer blocks
// than its size suggests is copied one data extent at a time
// (SEEK_DATA/SEEK_HOLE), so holes stay holes. It does not sync dst.
func (c *Copier) CopyData(dst, src int, st *unix.Stat_t) error {
	size := st.Size
	if size == 0 {
		return nil
	}
	if st.Blocks*512 >= size {
		return c.copyRange(dst, src, 0, size)
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if errors.Is(err, unix.EINVAL) {
			data = off // no SEEK_DATA here: the rest is data
		} else if err != nil {
			return fmt.Errorf("SEEK_DATA: %w", err)
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if errors.Is(err, unix.EINVAL) {
			hole = size
		} else if err != nil {
			return fmt.Errorf("SEEK_HOLE: %w", err)
		}
		hole = min(hole, size)
		if err := c.copyRange(dst, src, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	// Extend the copy over a trailing hole.
	if err := unix.Ftruncate(dst, size); err != nil {
		return fmt.Errorf("ftruncate: %w", err)
	}
	return nil
}

// copyRange copies n bytes at offset off of src to the same offset of dst,
// with copy_file_range so that the kernel can share or offload the copy, or
// with pread/pwrite where it cannot.
func (c *Copier) copyRange(dst, src int, off, n int64) error {
	roff, woff := off, off
	for n > 0 && !c.NoCopyFileRange {
		w, err := unix.CopyFileRange(src, &roff, dst, &woff, int(min(n, cfrChunk)), 0)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL),
			errors.Is(err, unix.EOPNOTSUPP):
			c.NoCopyFileRange = true
		case err != nil:
			return fmt.Errorf("copy_file_range: %w", err)
		case w == 0:
			// The source shrank.
			return fmt.Errorf("copy_file_range: %w", io.ErrUnexpectedEOF)
		default:
			n -= int64(w)
		}
	}
	if n == 0 {
		return nil
	}
	if c.buf == nil {
		c.buf = make([]byte, rwBufSize)
	}
	for n > 0 {
		r, err := unix.Pread(src, c.buf[:min(n, int64(len(c.buf)))], roff)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("pread: %w", err)
		}
		if r == 0 {
			return fmt.Errorf("pread: %w", io.ErrUnexpectedEOF)
		}
		if err := pwriteAll(dst, c.buf[:r], woff); err != nil {
			return err
		}
		roff, woff, n = roff+int64(r), woff+int64(r), n-int64(r)
	}
	return nil
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		w, err := unix.Pwrite(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("pwrite: %w", err)
		}
		b, off = b[w:], off+int64(w)
	}
	return nil
}

// ErrNoReflink is wrapped by the error of ReflinkFile where the file system
// cannot share extents between the two files.
var ErrNoReflink = errors.New("the file system has no reflinks")

// ReflinkFile makes the empty regular file open at dst share the extents of the
// regular file open at src (FICLONE), in O(1), or fails: with an error
// wrapping ErrNoReflink where the file system cannot; it never copies.
func ReflinkFile(dst, src int) error {
	err := unix.IoctlFileClone(dst, src)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EXDEV),
		errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("FICLONE: %w: %w", ErrNoReflink, err)
	}
	return fmt.Errorf("FICLONE: %w", err)
}

// ProbeReflink reports whether files of the file system of the directory
// open at dirFd can be cloned in O(1) (FICLONE), probed on two unnamed files
// made there. The probe is O(1) itself. When it cannot tell, it says yes:
// the clone that follows says why if it fails.
func ProbeReflink(dirFd int) bool {
	src, err := unix.Openat(dirFd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		// Cannot tell: try the clone, which says why if it fails.
		return true
	}
	defer unix.Close(src)
	dst, err := unix.Openat(dirFd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return true
	}
	defer unix.Close(dst)
	if _, err := unix.Pwrite(src, make([]byte, 4096), 0); err != nil {
		return true
	}
	return !errors.Is(ReflinkFile(dst, src), ErrNoReflink)
}
