package fsx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DirReader lists a directory through its descriptor with getdents64, a
// buffer at a time, so a huge directory is never held in memory. It
// remembers where the last entry it returned ends, so a walk can close the
// descriptor and resume the listing through another one.
type DirReader struct {
	fd       int
	buf      []byte
	pos, end int
	off      int64 // the directory offset after the last entry returned
}

// DirBufs recycles the buffers of the DirReaders of a walk, so that it
// allocates one per directory open at the same time, not one per directory
// it lists. The zero value is ready; it is not safe for concurrent use.
type DirBufs struct{ free [][]byte }

// Get returns a free buffer, or a new one of 8 KiB.
func (p *DirBufs) Get() []byte {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	return make([]byte, 8192)
}

// Put gives back the buffer of a listing that is over.
func (p *DirBufs) Put(b []byte) {
	if b != nil {
		p.free = append(p.free, b)
	}
}

// NewDirReader lists the directory open at fd, which it does not own, from
// fd's current offset, with buf (8 KiB is plenty) as its buffer.
func NewDirReader(fd int, buf []byte) DirReader { return DirReader{fd: fd, buf: buf} }

// Fd returns the descriptor being listed.
func (d *DirReader) Fd() int { return d.fd }

// Buf returns the reader's buffer, for reuse once the listing is over.
func (d *DirReader) Buf() []byte { return d.buf }

// Rewind starts the listing over from the first entry.
func (d *DirReader) Rewind() error {
	if _, err := unix.Seek(d.fd, 0, 0); err != nil {
		return err
	}
	d.pos, d.end, d.off = 0, 0, 0
	return nil
}

// reopen continues the listing through fd, a new descriptor of the same
// directory, after the last entry returned.
func (d *DirReader) reopen(fd int, buf []byte) error {
	if _, err := unix.Seek(fd, d.off, 0); err != nil {
		return err
	}
	d.fd, d.buf, d.pos, d.end = fd, buf, 0, 0
	return nil
}

// Next returns the next entry's name, skipping "." and "..", or an empty
// name at the end of the directory.
func (d *DirReader) Next() (string, error) {
	for {
		if d.pos >= d.end {
			n, err := unix.Getdents(d.fd, d.buf)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return "", err
			}
			if n <= 0 {
				return "", nil
			}
			d.pos, d.end = 0, n
		}
		// struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name.
		rec := d.buf[d.pos:d.end]
		if len(rec) < 19 {
			return "", fmt.Errorf("getdents64: short record")
		}
		reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
		if reclen < 19 || reclen > len(rec) {
			return "", fmt.Errorf("getdents64: bad record length %d", reclen)
		}
		d.off = int64(binary.NativeEndian.Uint64(rec[8:16]))
		name := rec[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		d.pos += reclen
		if string(name) == "." || string(name) == ".." || len(name) == 0 {
			continue
		}
		return string(name), nil
	}
}
