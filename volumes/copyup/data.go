package copyup

import (
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

const (
	// cfrChunk bounds one copy_file_range call, so a huge file is copied in
	// steps that a signal can interrupt.
	cfrChunk = 1 << 30
	// rwBufSize is the buffer of the read/write fallback.
	rwBufSize = 1 << 20
)

// copyData copies the st.Size bytes of the regular file src into the empty
// file dst. A file with fewer blocks than its size suggests is copied one
// data extent at a time (SEEK_DATA/SEEK_HOLE), so holes stay holes.
func (c *copier) copyData(src, dst int, st *unix.Stat_t) error {
	size := st.Size
	if size == 0 {
		return nil
	}
	if st.Blocks*512 >= size {
		return c.copyRange(src, dst, 0, size)
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if errors.Is(err, unix.EINVAL) {
			// No SEEK_DATA here: copy the rest as data.
			data = off
		} else if err != nil {
			return err
		}
		if data >= size {
			break
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if errors.Is(err, unix.EINVAL) {
			hole = size
		} else if err != nil {
			return err
		}
		hole = min(hole, size)
		if err := c.copyRange(src, dst, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	// Extend the copy over a trailing hole.
	return unix.Ftruncate(dst, size)
}

// copyRange copies n bytes at offset off of src to the same offset of dst,
// with copy_file_range so that the kernel can share or offload the copy, or
// with pread/pwrite where it cannot.
func (c *copier) copyRange(src, dst int, off, n int64) error {
	roff, woff := off, off
	for n > 0 && !c.noCFR {
		w, err := unix.CopyFileRange(src, &roff, dst, &woff, int(min(n, cfrChunk)), 0)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL),
			errors.Is(err, unix.EOPNOTSUPP):
			c.noCFR = true
		case err != nil:
			return err
		case w == 0:
			return io.ErrUnexpectedEOF // the source shrank
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
			return err
		}
		if r == 0 {
			return io.ErrUnexpectedEOF
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
			return err
		}
		b, off = b[w:], off+int64(w)
	}
	return nil
}
