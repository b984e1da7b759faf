package volumes

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// ArchiveLimits bound what Import takes from a tar; zero means no limit.
type ArchiveLimits struct {
	// MaxFiles caps the entries of the archive.
	MaxFiles int64
	// MaxBytes caps the sum of the sizes of its regular files, as a reader
	// of them counts, holes included, and of its PAX records, extended
	// attributes included.
	MaxBytes int64
}

// ArchiveStats count what Export wrote or Import read.
type ArchiveStats struct {
	Entries int64
	Bytes   int64
	// Skipped counts what Export left out: sockets, FIFOs and device
	// nodes, which Import refuses, and mounts inside the volume.
	Skipped int64
	// Snapshot says Export read a temporary snapshot of the volume, taken
	// because containers use it: the tar is the volume at one instant.
	Snapshot bool
}

// xattrPrefix is how PAX records carry extended attributes (GNU tar and
// bsdtar write and read the same).
const xattrPrefix = "SCHILY.xattr."

// xattrValueMax is the largest extended attribute value Linux takes
// (XATTR_SIZE_MAX): Import refuses a larger one at its entry instead of
// failing to set it later. archive/tar itself refuses a PAX header, all its
// records together, over 1 MiB, which bounds what one header holds.
const xattrValueMax = 64 << 10

// Export writes the data of volume name in namespace ns to w as a tar: owners,
// modes, nanosecond times, extended attributes, hard links as links and
// symlinks as links. It reads through descriptors beneath _data and never
// follows a symlink, so a container that uses the volume meanwhile cannot make
// it read outside. A sized volume that containers use is read from a
// temporary snapshot (see snapshot_export.go), so the tar is the volume at
// one instant; in a plain one, a file that changes while it is read is
// archived as far as its size said when its header was written.
func (s *Store) Export(ns, name string, w io.Writer) (ArchiveStats, error) {
	var stats ArchiveStats
	dataFd, release, snap, err := s.exportSource(ns, name)
	if err != nil {
		return stats, err
	}
	defer release()
	stats.Snapshot = snap
	root, err := fsx.Fstat(dataFd)
	if err != nil {
		return stats, volumeError(ns, name, err)
	}
	e := &exporter{tw: tar.NewWriter(w), dev: root.Dev, links: map[inode]string{}, stats: &stats}
	if err := e.walk(dataFd, &root); err != nil {
		return stats, opError("export", ns, name, err)
	}
	if err := e.tw.Close(); err != nil {
		return stats, opError("export", ns, name, err)
	}
	return stats, nil
}

type exporter struct {
	tw    *tar.Writer
	dev   uint64
	links map[inode]string
	stats *ArchiveStats
}

// exportDir is one directory on the path from _data to where the export is.
type exportDir struct {
	name  string // its name in its parent
	id    inode
	fd    int      // -1 while closed to bound descriptors
	names []string // its entries still to write, sorted
}

// walk writes the tree below the directory open at rootFd, in sorted order
// and depth first. However deep the tree, it holds at most fsx.MaxHeld
// directory descriptors besides rootFd: a deeper walk closes the shallowest
// open directory and reopens it through ".." on the way back, checking it is
// the same one. The archive name of the current directory is kept as one
// string, cut back on the way up.
func (e *exporter) walk(rootFd int, root *unix.Stat_t) error {
	if err := e.write(dirHeader(".", root), rootFd); err != nil {
		return err
	}
	names, err := sortedNames(rootFd, ".")
	if err != nil {
		return err
	}
	stack := []*exportDir{{id: inode{root.Dev, root.Ino}, fd: rootFd, names: names}}
	held := 0 // open directories besides rootFd
	defer func() {
		for _, d := range stack[1:] {
			if d.fd >= 0 {
				unix.Close(d.fd)
			}
		}
	}()
	rel := "."
	for {
		top := stack[len(stack)-1]
		if len(top.names) == 0 {
			if len(stack) == 1 {
				return nil
			}
			parent := stack[len(stack)-2]
			if parent.fd < 0 {
				fd, err := reopenParent(top.fd, parent.id)
				if err != nil {
					return fmt.Errorf("%s/..: %w", rel, err)
				}
				parent.fd = fd
				held++
			}
			unix.Close(top.fd)
			if len(stack) == 2 {
				rel = "."
			} else {
				rel = rel[:len(rel)-len(top.name)-1]
			}
			stack = stack[:len(stack)-1]
			held--
			continue
		}
		name := top.names[0]
		top.names = top.names[1:]
		child := rel + "/" + name
		if rel == "." {
			child = name
		}
		fd, st, err := e.entry(top.fd, name, child)
		if err != nil {
			return err
		}
		if fd < 0 {
			continue
		}
		if err := e.write(dirHeader(child, st), fd); err != nil {
			unix.Close(fd)
			return err
		}
		names, err := sortedNames(fd, child)
		if err != nil {
			unix.Close(fd)
			return err
		}
		stack = append(stack, &exportDir{name: name, id: inode{st.Dev, st.Ino}, fd: fd, names: names})
		rel = child
		if held++; held > fsx.MaxHeld {
			shallowest := stack[len(stack)-held]
			unix.Close(shallowest.fd)
			shallowest.fd = -1
			held--
		}
	}
}

// entry writes entry name of the directory open at parent, named rel in the
// archive, unless it is a directory of the volume's own file system: that
// it opens and returns, with its status, for the walk to write and enter.
func (e *exporter) entry(parent int, name, rel string) (int, *unix.Stat_t, error) {
	st, err := fsx.Lstat(parent, name)
	if errors.Is(err, unix.ENOENT) {
		return -1, nil, nil // removed while we read
	}
	if err != nil {
		return -1, nil, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if st.Dev != e.dev {
			e.stats.Skipped++ // a mount inside the volume is not its data
			return -1, nil, nil
		}
		fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, nil, &os.PathError{Op: "openat", Path: rel, Err: err}
		}
		// Describe what was opened, which may differ from what was listed.
		cur, err := fsx.Fstat(fd)
		if err == nil && cur.Dev != e.dev {
			unix.Close(fd)
			e.stats.Skipped++
			return -1, nil, nil
		}
		if err != nil {
			unix.Close(fd)
			return -1, nil, &os.PathError{Op: "fstat", Path: rel, Err: err}
		}
		return fd, &cur, nil
	case unix.S_IFLNK:
		target, err := fsx.Readlink(parent, name)
		if err != nil {
			return -1, nil, fmt.Errorf("%s: %w", rel, err)
		}
		hdr := header(rel, &st)
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		return -1, nil, e.write(hdr, -1)
	case unix.S_IFREG:
		return -1, nil, e.file(parent, name, rel, &st)
	}
	e.stats.Skipped++
	return -1, nil, nil
}

func dirHeader(rel string, st *unix.Stat_t) *tar.Header {
	hdr := header(rel+"/", st)
	hdr.Typeflag = tar.TypeDir
	return hdr
}

func sortedNames(fd int, rel string) ([]string, error) {
	names, err := fsx.ReadDirNames(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	slices.Sort(names)
	return names, nil
}

// reopenParent opens ".." of the directory open at fd and checks that it is
// still the directory id, which the walk came from.
func reopenParent(fd int, id inode) (int, error) {
	pfd, err := unix.Openat(fd, "..", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	st, err := fsx.Fstat(pfd)
	if err == nil && (inode{st.Dev, st.Ino}) != id {
		err = fsx.ErrMoved
	}
	if err != nil {
		unix.Close(pfd)
		return -1, err
	}
	return pfd, nil
}

func (e *exporter) file(parent int, name, rel string, st *unix.Stat_t) error {
	id := inode{st.Dev, st.Ino}
	if first, ok := e.links[id]; ok && st.Nlink > 1 {
		hdr := header(rel, st)
		hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
		return e.write(hdr, -1)
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: rel, Err: err}
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	// Describe what was opened, which may differ from what was listed.
	cur, err := fsx.Fstat(fd)
	if err != nil {
		return err
	}
	if cur.Mode&unix.S_IFMT != unix.S_IFREG {
		e.stats.Skipped++
		return nil
	}
	if cur.Nlink > 1 {
		e.links[inode{cur.Dev, cur.Ino}] = rel
	}
	hdr := header(rel, &cur)
	hdr.Typeflag, hdr.Size = tar.TypeReg, cur.Size
	if err := e.write(hdr, fd); err != nil {
		return err
	}
	n, err := io.Copy(e.tw, io.LimitReader(f, cur.Size))
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if n < cur.Size { // shrank while read: pad, as the header promised the size
		if _, err := io.CopyN(e.tw, zeroReader{}, cur.Size-n); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	e.stats.Bytes += cur.Size
	return nil
}

// write writes hdr with the extended attributes of fd (-1: none; symlinks
// cannot be read without following them).
func (e *exporter) write(hdr *tar.Header, fd int) error {
	if fd >= 0 {
		xattrs, err := fsx.Xattrs(fd)
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		for k, v := range xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[xattrPrefix+k] = v
		}
	}
	e.stats.Entries++
	if err := e.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	return nil
}

func header(name string, st *unix.Stat_t) *tar.Header {
	return &tar.Header{
		Name:       name,
		Mode:       int64(st.Mode & 0o7777),
		Uid:        int(st.Uid),
		Gid:        int(st.Gid),
		ModTime:    time.Unix(st.Mtim.Unix()),
		AccessTime: time.Unix(st.Atim.Unix()),
		Format:     tar.FormatPAX,
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Import fills the data of volume name in namespace ns, which must be empty,
// from the tar r. A volume that a container uses is refused with ErrInUse
// naming the containers, as Remove does, and from that check to its end the
// import holds containers out: Acquire refuses the volume (see
// importRunning), so no container sees half an import or writes into a
// volume that a failed import empties again. The tar is untrusted: an entry
// with "..", an absolute name, one beneath a symlink, a hard link to anything
// but a regular file already in the archive, a device node or FIFO, a
// duplicate, an extended attribute larger than the kernel takes, or one
// beyond limits is refused with ErrArchive and a message that names it. Every
// write goes through descriptors beneath _data that refuse symlinks, so
// nothing outside the volume is touched; on any failure _data is emptied
// again and its owner, mode and times restored, and a volume that was cut
// short when the import began (CreateSeeding makes it so) stays cut short,
// held out of containers until an import ends well. Runs of zeros in a file, the
// holes of a sparse entry among them, are written as holes.
func (s *Store) Import(ns, name string, r io.Reader, limits ArchiveLimits) (stats ArchiveStats, err error) {
	volFd, dataFd, release, err := s.openArchiveData(ns, name, unix.LOCK_EX)
	if err != nil {
		return stats, err
	}
	defer release()
	var hold *importHold
	if err := s.withLock(unix.LOCK_SH, func() error {
		if users := s.idx.usedBy(volumeKey(ns, name)); len(users) > 0 {
			return &OpError{Namespace: ns, Name: name, Refs: users, Err: ErrInUse}
		}
		var err error
		if hold, err = holdImport(volFd); err != nil {
			return volumeError(ns, name, err)
		}
		return nil
	}); err != nil {
		return stats, err
	}
	emptied := true // whether _data is as the import found it, or empty
	defer func() {
		if !emptied {
			unix.Close(hold.fd) // the marker stays, unlocked: cut short
			return
		}
		if err != nil && hold.cutShort {
			// It was cut short (a seeding pull's volume is made so) and
			// stays so, empty: its owner may not get to remove it (a
			// CLI export holds it, the process dies), and an empty
			// volume without the marker would be taken for complete.
			unix.Close(hold.fd)
			return
		}
		if rerr := s.withLock(unix.LOCK_SH, hold.release); rerr != nil {
			err = errors.Join(err, volumeError(ns, name, rerr))
		}
	}()
	root, err := fsx.Fstat(dataFd)
	if err != nil {
		return stats, volumeError(ns, name, err)
	}
	if hold.cutShort {
		// What an import killed part-way left, which no container saw.
		if err := removeContentsAt(dataFd, root.Dev); err != nil {
			emptied = false
			return stats, opError("import", ns, name, fmt.Errorf("emptying what an import cut short left: %w", err))
		}
	}
	empty, err := fsx.IsEmptyDir(dataFd)
	if err != nil {
		return stats, volumeError(ns, name, err)
	}
	if !empty {
		return stats, volumeError(ns, name, fmt.Errorf("%w: import needs an empty volume", ErrInUse))
	}
	im := &importer{data: dataFd, limits: limits, stats: &stats}
	if err := im.run(tar.NewReader(r)); err != nil {
		cause := opError("import", ns, name, err)
		if cerr := removeContentsAt(dataFd, root.Dev); cerr != nil {
			emptied = false
			return stats, errors.Join(cause, opError("import", ns, name, fmt.Errorf("emptying after the failure: %w", cerr)))
		}
		// Best effort: the volume is empty again, which is what counts.
		_ = fsx.SetOwnerModeTimes(dataFd, &root)
		return stats, cause
	}
	return stats, nil
}

// importHold is an import's hold on its volume: the marker, locked.
type importHold struct {
	volFd, fd int
	// cutShort: the marker was there, left by an import killed part-way.
	cutShort bool
}

// holdImport makes and locks the import marker in the volume directory open
// at volFd, under the store's lock, which Acquire takes too. The caller
// holds the volume's own lock, so no other import runs.
func holdImport(volFd int) (*importHold, error) {
	h := &importHold{volFd: volFd}
	fd, err := unix.Openat(volFd, importMarker, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) {
		h.cutShort = true
		fd, err = unix.Openat(volFd, importMarker, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("import marker: %w", err)
	}
	h.fd = fd
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("import marker: %w", err)
	}
	// A crash must not lose the marker while partial data stays.
	if err := unix.Fsync(volFd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("import marker: %w", err)
	}
	return h, nil
}

// release removes the marker, under the store's lock: an Acquire finds it
// locked or finds none, never one that is unlocked but for a moment.
func (h *importHold) release() error {
	defer unix.Close(h.fd)
	if err := unix.Unlinkat(h.volFd, importMarker, 0); err != nil {
		return fmt.Errorf("import marker: %w", err)
	}
	return nil
}

// Import states of a volume, as its marker shows them.
const (
	importNone = iota
	importFilling
	importCutShort
)

// importState reads the import marker of volume name in namespace ns: one
// openat for a volume without one.
func (s *Store) importState(ns, name string) (int, error) {
	fd, err := fsx.OpenBeneath(s.dirFd, ns+"/"+name+"/"+importMarker, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return importNone, nil
	}
	if err != nil {
		return importNone, fmt.Errorf("import marker: %w", err)
	}
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)
	switch {
	case errors.Is(err, unix.EWOULDBLOCK):
		return importFilling, nil
	case err != nil:
		return importNone, fmt.Errorf("import marker: %w", err)
	}
	return importCutShort, nil
}

// errImportCutShort says what a volume that an import left partial needs.
const errImportCutShort = "an import into it was cut short and its data is partial; run \"volume import\" again or \"volume rm\" it"

// importRunning refuses volume name in namespace ns for a container while
// an import fills it or after one was cut short. The caller holds the
// store's lock, which an import takes to make and remove its marker.
func (s *Store) importRunning(ns, name string) error {
	state, err := s.importState(ns, name)
	switch {
	case err != nil:
		return volumeError(ns, name, err)
	case state == importFilling:
		return volumeError(ns, name, fmt.Errorf("%w: an import is filling it; start the container once \"volume import\" ends", ErrInUse))
	case state == importCutShort:
		return volumeError(ns, name, fmt.Errorf("%w: %s", ErrInUse, errImportCutShort))
	}
	return nil
}

type importer struct {
	data   int
	limits ArchiveLimits
	stats  *ArchiveStats
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
			return fmt.Errorf("%w: reading the tar: %w", ErrArchive, err)
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

// cleanName checks an entry's name and returns it relative to _data, "" for
// _data itself.
func cleanName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: entry %q: not a relative path", ErrArchive, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: entry %q: has a .. component", ErrArchive, name)
		}
	}
	if len(name) > unix.PathMax {
		return "", fmt.Errorf("%w: entry %q: longer than %d bytes", ErrArchive, name[:64]+"...", unix.PathMax)
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

func (im *importer) entry(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	im.stats.Entries++
	if im.limits.MaxFiles > 0 && im.stats.Entries > im.limits.MaxFiles {
		return fmt.Errorf("%w: entry %q: more than %d entries", ErrArchive, hdr.Name, im.limits.MaxFiles)
	}
	if err := im.countRecords(hdr); err != nil {
		return err
	}
	if hdr.Size < 0 || im.limits.MaxBytes > 0 && im.stats.Bytes+im.records+hdr.Size > im.limits.MaxBytes {
		return fmt.Errorf("%w: entry %q: more than %d bytes in all", ErrArchive, hdr.Name, im.limits.MaxBytes)
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: entry %q: the root must be a directory", ErrArchive, hdr.Name)
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
	fail := func(op string, err error) error {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: entry %q: a second entry of that name", ErrArchive, hdr.Name)
		}
		return fmt.Errorf("entry %q: %s: %w", hdr.Name, op, err)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err := unix.Mkdirat(parent, base, 0o700)
		if errors.Is(err, unix.EEXIST) {
			st, serr := fsx.Lstat(parent, base)
			if serr != nil || !fsx.IsDir(&st) {
				return fail("mkdirat", err)
			}
			err = nil // made as the parent of an earlier entry
		}
		if err != nil {
			return fail("mkdirat", err)
		}
		// Extended attributes now, while the header is at hand: the
		// end of the import sets only what must wait for the content.
		if err := im.dirXattrs(parent, base, hdr); err != nil {
			return err
		}
		im.dirs = append(im.dirs, dirAttrs{rel: rel, entry: hdr.Name, attrs: attrsOf(hdr)})
		return nil
	case tar.TypeReg:
		fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fail("openat", err)
		}
		f := os.NewFile(uintptr(fd), rel)
		defer f.Close()
		n, err := im.copySparse(f, r, hdr.Size)
		im.stats.Bytes += n
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: entry %q: the tar is truncated", ErrArchive, hdr.Name)
		}
		if err != nil {
			return fail("write", err)
		}
		im.files[rel] = true
		if err := im.setAttrs(rel, hdr.Name, attrsOf(hdr), false, fd); err != nil {
			return err
		}
		// After the owner: chown drops security.capability.
		return setXattrs(fd, hdr)
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
			return fmt.Errorf("%w: entry %q: bad symlink target", ErrArchive, hdr.Name)
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return fail("symlinkat", err)
		}
		return im.setAttrs(rel, hdr.Name, attrsOf(hdr), true, -1)
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil || !im.files[target] {
			return fmt.Errorf("%w: entry %q: hard link to %q, which is no regular file earlier in the archive", ErrArchive, hdr.Name, hdr.Linkname)
		}
		tparent, err := im.parent(target, hdr.Linkname)
		if err != nil {
			return err
		}
		defer closeParent(tparent, im.data)
		if err := unix.Linkat(tparent, path.Base(target), parent, base, 0); err != nil {
			return fail("linkat", err)
		}
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return fmt.Errorf("%w: entry %q: device nodes and FIFOs are not imported", ErrArchive, hdr.Name)
	}
	return fmt.Errorf("%w: entry %q: unsupported type %q", ErrArchive, hdr.Name, hdr.Typeflag)
}

// countRecords counts the PAX records of hdr against the limits and
// refuses an extended attribute larger than the kernel takes.
func (im *importer) countRecords(hdr *tar.Header) error {
	for k, v := range hdr.PAXRecords {
		im.records += int64(len(k) + len(v))
		if x, ok := strings.CutPrefix(k, xattrPrefix); ok && len(v) > xattrValueMax {
			return fmt.Errorf("%w: entry %q: extended attribute %s: %d bytes, more than the %d Linux takes", ErrArchive, hdr.Name, x, len(v), xattrValueMax)
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

// copyBlock is how much of a file Import copies at a time, and the size of
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

// parent opens the directory that holds rel, beneath _data and refusing
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
			return -1, fmt.Errorf("%w: entry %q: beneath a symlink or a file", ErrArchive, entry)
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

// inode names a file by device and inode number, for hard links.
type inode struct{ dev, ino uint64 }

// openArchiveData opens the directory and the _data of a volume for export
// or import: a sized volume's own file system brought up for it (see
// activeData), the volume's flock taken as how says. release closes it all,
// in that order.
func (s *Store) openArchiveData(ns, name string, how int) (volFd, dataFd int, release func(), err error) {
	done, err := s.activeData(ns, name)
	if err != nil {
		return -1, -1, nil, err
	}
	volFd, dataFd, err = s.openData(ns, name, how)
	if err != nil {
		done()
		return -1, -1, nil, err
	}
	return volFd, dataFd, func() {
		unix.Close(dataFd)
		unix.Close(volFd)
		done()
	}, nil
}
