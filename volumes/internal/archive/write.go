package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// Write writes the tree below the directory open at dataFd to w as a tar:
// owners, modes, nanosecond times, extended attributes, hard links as links
// and symlinks as links. root is the status of dataFd, which the caller
// took: a directory on another device than root's is a mount inside the
// volume, not its data, and is left out. A file that changes while it is
// read is archived as far as its size said when its header was written.
// The stats count what was written, also when Write fails part-way.
func Write(dataFd int, root *unix.Stat_t, w io.Writer) (Stats, error) {
	var stats Stats
	e := &exporter{tw: tar.NewWriter(w), dev: root.Dev, links: map[inode]string{}, stats: &stats}
	if err := e.walk(dataFd, root); err != nil {
		return stats, err
	}
	err := e.tw.Close()
	return stats, err
}

type exporter struct {
	tw    *tar.Writer
	dev   uint64
	links map[inode]string
	stats *Stats
}

// exportDir is one directory on the path from the root to where the walk is.
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
