package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// Read fills the empty directory open at dataFd from the tar r. The tar is
// untrusted: an entry with "..", an absolute name, one beneath a symlink, a
// hard link to anything but a regular file already in the archive, a device
// node or FIFO, a duplicate, an extended attribute larger than the kernel
// takes, or one beyond limits is refused with ErrRefused and a message that
// names it. Every write goes through descriptors beneath dataFd that refuse
// symlinks, so nothing outside the directory is touched. Runs of zeros in a
// file, the holes of a sparse entry among them, are written as holes. On a
// failure what Read wrote stays, for the caller to remove; the stats count
// what was read until then.
func Read(dataFd int, r io.Reader, limits Limits) (Stats, error) {
	var stats Stats
	im := &importer{data: dataFd, limits: limits, stats: &stats}
	err := im.run(tar.NewReader(r))
	return stats, err
}

type importer struct {
	data   int
	limits Limits
	stats  *Stats
	// records counts the bytes of the PAX records read, which limits.MaxBytes
	// bounds together with stats.Bytes.
	records int64
	// dirs are the directories made, whose owner, mode and times are set
	// once everything inside them is written: all that is kept of their
	// headers, as the archive may hold many.
	dirs []dirAttrs
	// files are the regular files written, the only hard link targets.
	files map[string]bool
	// buf is the buffer files are copied through.
	buf []byte
}

// attrs are what an entry's header says of its owner, mode and times.
type attrs struct {
	uid, gid     int
	mode         int64
	atime, mtime time.Time
}

func attrsOf(hdr *tar.Header) attrs {
	return attrs{uid: hdr.Uid, gid: hdr.Gid, mode: hdr.Mode, atime: hdr.AccessTime, mtime: hdr.ModTime}
}

// dirAttrs are the attrs of directory rel, named entry in the archive.
type dirAttrs struct {
	rel, entry string
	attrs
}

func (im *importer) run(tr *tar.Reader) error {
	im.files = map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: reading the tar: %w", ErrRefused, err)
		}
		if err := im.entry(hdr, tr); err != nil {
			return err
		}
	}
	for i := len(im.dirs) - 1; i >= 0; i-- {
		d := im.dirs[i]
		if err := im.setAttrs(d.rel, d.entry, d.attrs, false, -1); err != nil {
			return err
		}
	}
	return nil
}

// cleanName checks an entry's name and returns it relative to the directory
// Read fills, "" for that directory itself.
func cleanName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: entry %q: not a relative path", ErrRefused, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: entry %q: has a .. component", ErrRefused, name)
		}
	}
	if len(name) > unix.PathMax {
		return "", fmt.Errorf("%w: entry %q: longer than %d bytes", ErrRefused, name[:64]+"...", unix.PathMax)
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// entry makes entry hdr of the archive, whose content r reads, once admit
// has checked its name and counted it against the limits.
func (im *importer) entry(hdr *tar.Header, r io.Reader) error {
	rel, err := im.admit(hdr)
	if err != nil {
		return err
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: entry %q: the root must be a directory", ErrRefused, hdr.Name)
		}
		if err := setXattrs(im.data, hdr); err != nil {
			return err
		}
		im.dirs = append(im.dirs, dirAttrs{rel: "", entry: hdr.Name, attrs: attrsOf(hdr)})
		return nil
	}
	parent, err := im.parent(rel, hdr.Name)
	if err != nil {
		return err
	}
	defer closeParent(parent, im.data)
	base := path.Base(rel)
	switch hdr.Typeflag {
	case tar.TypeDir:
		return im.mkdir(parent, base, rel, hdr)
	case tar.TypeReg:
		return im.create(parent, base, rel, hdr, r)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
			return fmt.Errorf("%w: entry %q: bad symlink target", ErrRefused, hdr.Name)
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return entryError(hdr, "symlinkat", err)
		}
		return im.setAttrs(rel, hdr.Name, attrsOf(hdr), true, -1)
	case tar.TypeLink:
		return im.link(parent, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return fmt.Errorf("%w: entry %q: device nodes and FIFOs are not imported", ErrRefused, hdr.Name)
	}
	return fmt.Errorf("%w: entry %q: unsupported type %q", ErrRefused, hdr.Name, hdr.Typeflag)
}

// admit checks the name of entry hdr and counts it against the limits, and
// returns its name relative to the directory Read fills.
func (im *importer) admit(hdr *tar.Header) (string, error) {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return "", err
	}
	im.stats.Entries++
	if im.limits.MaxFiles > 0 && im.stats.Entries > im.limits.MaxFiles {
		return "", fmt.Errorf("%w: entry %q: more than %d entries", ErrRefused, hdr.Name, im.limits.MaxFiles)
	}
	if err := im.countRecords(hdr); err != nil {
		return "", err
	}
	if hdr.Size < 0 || im.limits.MaxBytes > 0 && im.stats.Bytes+im.records+hdr.Size > im.limits.MaxBytes {
		return "", fmt.Errorf("%w: entry %q: more than %d bytes in all", ErrRefused, hdr.Name, im.limits.MaxBytes)
	}
	return rel, nil
}

// entryError is the error of op on entry hdr: a name that exists already
// was made by a second entry of that name.
func entryError(hdr *tar.Header, op string, err error) error {
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w: entry %q: a second entry of that name", ErrRefused, hdr.Name)
	}
	return fmt.Errorf("entry %q: %s: %w", hdr.Name, op, err)
}

// mkdir makes directory entry hdr, rel, as base of parent, unless an
// earlier entry made it as its parent.
func (im *importer) mkdir(parent int, base, rel string, hdr *tar.Header) error {
	err := unix.Mkdirat(parent, base, 0o700)
	if errors.Is(err, unix.EEXIST) {
		st, serr := fsx.Lstat(parent, base)
		if serr != nil || !fsx.IsDir(&st) {
			return entryError(hdr, "mkdirat", err)
		}
		err = nil // made as the parent of an earlier entry
	}
	if err != nil {
		return entryError(hdr, "mkdirat", err)
	}
	// Extended attributes now, while the header is at hand: the
	// end of the import sets only what must wait for the content.
	if err := im.dirXattrs(parent, base, hdr); err != nil {
		return err
	}
	im.dirs = append(im.dirs, dirAttrs{rel: rel, entry: hdr.Name, attrs: attrsOf(hdr)})
	return nil
}

// create writes regular file entry hdr, rel, as base of parent, with the
// content r reads.
func (im *importer) create(parent int, base, rel string, hdr *tar.Header, r io.Reader) error {
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return entryError(hdr, "openat", err)
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	n, err := im.copySparse(f, r, hdr.Size)
	im.stats.Bytes += n
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: entry %q: the tar is truncated", ErrRefused, hdr.Name)
	}
	if err != nil {
		return entryError(hdr, "write", err)
	}
	im.files[rel] = true
	if err := im.setAttrs(rel, hdr.Name, attrsOf(hdr), false, fd); err != nil {
		return err
	}
	// After the owner: chown drops security.capability.
	return setXattrs(fd, hdr)
}

// link makes hard link entry hdr as base of parent, to a regular file an
// earlier entry wrote.
func (im *importer) link(parent int, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil || !im.files[target] {
		return fmt.Errorf("%w: entry %q: hard link to %q, which is no regular file earlier in the archive", ErrRefused, hdr.Name, hdr.Linkname)
	}
	tparent, err := im.parent(target, hdr.Linkname)
	if err != nil {
		return err
	}
	defer closeParent(tparent, im.data)
	if err := unix.Linkat(tparent, path.Base(target), parent, base, 0); err != nil {
		return entryError(hdr, "linkat", err)
	}
	return nil
}

// countRecords counts the PAX records of hdr against the limits and
// refuses an extended attribute larger than the kernel takes.
func (im *importer) countRecords(hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		im.records += int64(len(k) + len(v))
		if x, ok := strings.CutPrefix(k, xattrPrefix); ok && len(v) > xattrValueMax {
			return fmt.Errorf("%w: entry %q: extended attribute %s: %d bytes, more than the %d Linux takes", ErrRefused, hdr.Name, x, len(v), xattrValueMax)
		}
	}
	return nil
}

// dirXattrs sets the extended attributes of hdr on directory base of
// parent, which the import has just made or found made.
func (im *importer) dirXattrs(parent int, base string, hdr *tar.Header) error {
	if !hasXattrs(hdr) {
		return nil
	}
	fd, err := fsx.OpenDir(parent, base)
	if err != nil {
		return fmt.Errorf("entry %q: open: %w", hdr.Name, err)
	}
	defer unix.Close(fd)
	return setXattrs(fd, hdr)
}

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			return true
		}
	}
	return false
}

// setXattrs sets the extended attributes of hdr on fd.
func setXattrs(fd int, hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, xattrPrefix); ok {
			if err := unix.Fsetxattr(fd, x, []byte(v), 0); err != nil {
				return fmt.Errorf("entry %q: setxattr %s: %w", hdr.Name, x, err)
			}
		}
	}
	return nil
}

// copyBlock is how much of a file Read copies at a time, and the size of
// the zero runs it writes as holes.
const copyBlock = 128 << 10

var zeroBlock [copyBlock]byte

// copySparse copies size bytes from r to the new, empty file f, skipping
// blocks of zeros, which stay holes: a sparse entry, which archive/tar reads
// as its full size with zeros for the holes, takes on disk what its data
// takes. It returns how many bytes it read; io.EOF or io.ErrUnexpectedEOF
// when r ends before size.
func (im *importer) copySparse(f *os.File, r io.Reader, size int64) (int64, error) {
	if im.buf == nil {
		im.buf = make([]byte, copyBlock)
	}
	var off int64
	for off < size {
		n, err := io.ReadFull(r, im.buf[:min(int64(len(im.buf)), size-off)])
		if b := im.buf[:n]; n > 0 && !bytes.Equal(b, zeroBlock[:n]) {
			if _, werr := f.WriteAt(b, off); werr != nil {
				return off, werr
			}
		}
		off += int64(n)
		if err != nil {
			return off, err
		}
	}
	// The file ends in a hole, or is all of one.
	return off, f.Truncate(off)
}

// parent opens the directory that holds rel, beneath the directory Read fills and refusing
// symlinks, making missing directories (as tar does) with mode 0700 until
// their own entry, if any, sets theirs.
func (im *importer) parent(rel, entry string) (int, error) {
	dir := path.Dir(rel)
	if dir == "." {
		return im.data, nil
	}
	cur := im.data
	for _, c := range strings.Split(dir, "/") {
		err := unix.Mkdirat(cur, c, 0o700)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			closeParent(cur, im.data)
			return -1, fmt.Errorf("entry %q: mkdirat %s: %w", entry, c, err)
		}
		fd, err := fsx.OpenDir(cur, c)
		closeParent(cur, im.data)
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("%w: entry %q: beneath a symlink or a file", ErrRefused, entry)
		}
		if err != nil {
			return -1, fmt.Errorf("entry %q: %w", entry, err)
		}
		cur = fd
	}
	return cur, nil
}

func closeParent(fd, data int) {
	if fd != data {
		unix.Close(fd)
	}
}

// setAttrs sets the owner, mode and times a of entry rel, named entry in
// the archive: through fd when given, else by name without following a
// symlink, which isLink says rel is.
func (im *importer) setAttrs(rel, entry string, a attrs, isLink bool, fd int) error {
	fail := func(op string, err error) error { return fmt.Errorf("entry %q: %s: %w", entry, op, err) }
	ts := []unix.Timespec{timespec(a.atime, a.mtime), timespec(a.mtime, a.mtime)}
	if !isLink {
		if fd < 0 {
			var err error
			if rel == "" {
				fd, err = unix.Openat(im.data, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			} else {
				// Only directories come here; a container may have put
				// something else, a FIFO even, at their names meanwhile.
				fd, err = fsx.OpenBeneath(im.data, rel, unix.O_RDONLY|unix.O_DIRECTORY)
			}
			if err != nil {
				return fail("open", err)
			}
			defer unix.Close(fd)
		}
		// chown clears set-id bits, so it goes first.
		if err := unix.Fchown(fd, a.uid, a.gid); err != nil {
			return fail("chown", err)
		}
		if err := unix.Fchmod(fd, uint32(a.mode&0o7777)); err != nil {
			return fail("chmod", err)
		}
		if err := fsx.Futimens(fd, ts[0], ts[1]); err != nil {
			return fail("utimensat", err)
		}
		return nil
	}
	parent, err := im.parent(rel, entry)
	if err != nil {
		return err
	}
	defer closeParent(parent, im.data)
	base := path.Base(rel)
	if err := unix.Fchownat(parent, base, a.uid, a.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail("chown", err)
	}
	if err := unix.UtimesNanoAt(parent, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail("utimensat", err)
	}
	return nil
}

// timespec is t, or fallback when the archive has no such time.
func timespec(t, fallback time.Time) unix.Timespec {
	if t.IsZero() {
		t = fallback
	}
	return unix.NsecToTimespec(t.UnixNano())
}
