package copyup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// entry is what a test compares of one file: everything Copy promises to keep.
type entry struct {
	Mode         uint32
	UID, GID     uint32
	Atime, Mtime unix.Timespec
	Link         string // symlink target
	Data         string // regular file content
	Size         int64
	Xattrs       map[string]string
	Inode        uint64 // compared as hard-link groups, not as numbers
}

// settled snapshots dir after a first look, for use as what a later snapshot
// must equal: reading a symlink updates its atime once, and no O_NOATIME
// prevents it.
func settled(t *testing.T, dir string) map[string]entry {
	t.Helper()
	snapshot(t, dir)
	return snapshot(t, dir)
}

// snapshot records every entry below dir, keyed by slash path ("." for dir).
// It reads with O_NOATIME so that looking does not change what it records.
func snapshot(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	var links []string
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(dir, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		e := entry{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Atime: st.Atim, Mtime: st.Mtim, Inode: st.Ino, Xattrs: xattrs(t, p)}
		var names []string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			links = append(links, rel)
		case unix.S_IFREG:
			e.Data, e.Size = string(readNoatime(t, p, false)), st.Size
		case unix.S_IFDIR:
			names = strings.Split(string(readNoatime(t, p, true)), "\x00")
		}
		out[filepath.ToSlash(rel)] = e
		for _, n := range names {
			if n != "" {
				walk(filepath.Join(rel, n))
			}
		}
	}
	walk(".")
	// Read symlinks last: that updates their atime, which another name of
	// the same inode would show.
	for _, rel := range links {
		link, err := os.Readlink(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		e := out[filepath.ToSlash(rel)]
		e.Link = link
		out[filepath.ToSlash(rel)] = e
	}
	return out
}

// readNoatime returns a file's content, or a directory's names NUL-separated.
func readNoatime(t *testing.T, p string, dir bool) []byte {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if dir {
		names, err := f.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(strings.Join(names, "\x00"))
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func xattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 65536)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	var m map[string]string
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "security.") {
			continue // LSM labels are the host's business
		}
		v := make([]byte, 65536)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", p, name, err)
		}
		if m == nil {
			m = map[string]string{}
		}
		m[name] = string(v[:vn])
	}
	return m
}

// sameTree fails t unless got holds what want held, hard-link groups included.
func sameTree(t *testing.T, want, got map[string]entry) {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("entries: want %v, got %v", keys(want), keys(got))
	}
	groups := func(m map[string]entry) map[string]string {
		byIno := map[uint64][]string{}
		for p, e := range m {
			if e.Mode&unix.S_IFMT != unix.S_IFDIR {
				byIno[e.Inode] = append(byIno[e.Inode], p)
			}
		}
		out := map[string]string{}
		for _, ps := range byIno {
			sort.Strings(ps)
			for _, p := range ps {
				out[p] = strings.Join(ps, ",")
			}
		}
		return out
	}
	wg, gg := groups(want), groups(got)
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: missing", p)
			continue
		}
		if wg[p] != gg[p] {
			t.Errorf("%s: hard links: want %q, got %q", p, wg[p], gg[p])
		}
		w.Inode, g.Inode = 0, 0
		if w.Mode&unix.S_IFMT == unix.S_IFLNK {
			// A symlink's mode is always 0777; no need to compare.
			w.Mode, g.Mode = 0, 0
		}
		if !equalEntry(w, g) {
			t.Errorf("%s:\nwant %+v\n got %+v", p, w, g)
		}
	}
}

func equalEntry(a, b entry) bool {
	return maps.Equal(a.Xattrs, b.Xattrs) && a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID &&
		a.Atime == b.Atime && a.Mtime == b.Mtime && a.Link == b.Link && a.Data == b.Data && a.Size == b.Size
}

func keys(m map[string]entry) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// tree builds files below a root from a compact description.
type tree struct {
	t    *testing.T
	root string
}

func (b tree) path(p string) string { return filepath.Join(b.root, p) }

func (b tree) dir(p string, mode os.FileMode) {
	b.t.Helper()
	if err := os.MkdirAll(b.path(p), 0o755); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(p, mode)
}

func (b tree) file(p, data string, mode os.FileMode) {
	b.t.Helper()
	if err := os.WriteFile(b.path(p), []byte(data), 0o600); err != nil {
		b.t.Fatal(err)
	}
	b.chmod(p, mode)
}

func (b tree) chmod(p string, mode os.FileMode) {
	b.t.Helper()
	// unix.Chmod takes the raw bits, setuid, setgid and sticky included.
	if err := unix.Chmod(b.path(p), uint32(mode)); err != nil {
		b.t.Fatal(err)
	}
}

func (b tree) symlink(target, p string) {
	b.t.Helper()
	if err := os.Symlink(target, b.path(p)); err != nil {
		b.t.Fatal(err)
	}
}

func (b tree) link(old, p string) {
	b.t.Helper()
	if err := os.Link(b.path(old), b.path(p)); err != nil {
		b.t.Fatal(err)
	}
}

func (b tree) chown(p string, uid, gid int) {
	b.t.Helper()
	if err := os.Lchown(b.path(p), uid, gid); err != nil {
		b.t.Fatal(err)
	}
}

func (b tree) times(p string, atime, mtime int64) {
	b.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(atime), unix.NsecToTimespec(mtime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, b.path(p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		b.t.Fatal(err)
	}
}

// xattr sets an extended attribute, or skips the test where the file system
// has none of that namespace.
func (b tree) xattr(p, name, value string) {
	b.t.Helper()
	err := unix.Lsetxattr(b.path(p), name, []byte(value), 0)
	if errors.Is(err, unix.ENOTSUP) {
		b.t.Skipf("file system lacks %s xattrs", name)
	}
	if err != nil {
		b.t.Fatal(err)
	}
}

// layout is a rootfs under its own parent, with a marker beside it that no
// copy may read, and a destination under another parent, beside a marker no
// copy may write.
type layout struct {
	rootfs, dst string
	base        string
}

func newLayout(t *testing.T) layout {
	t.Helper()
	base := t.TempDir()
	l := layout{base: base, rootfs: filepath.Join(base, "image", "rootfs"), dst: filepath.Join(base, "vol", "_data")}
	for _, d := range []string{l.rootfs, l.dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"image/SECRET-outside-rootfs", "vol/SECRET-beside-dst"} {
		if err := os.WriteFile(filepath.Join(base, f), []byte("secret"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// outside snapshots everything in the layout but dst, to prove nothing there
// changed.
func (l layout) outside(t *testing.T) map[string]entry {
	t.Helper()
	all := settled(t, l.base)
	for p := range all {
		if p == "vol/_data" || strings.HasPrefix(p, "vol/_data/") || p == "vol" {
			delete(all, p)
		}
	}
	for p, e := range all {
		if strings.HasPrefix(p, "image/rootfs") {
			e.Atime = unix.Timespec{} // reading the image is allowed
			all[p] = e
		}
	}
	return all
}

const (
	sec = int64(1e9)
	t0  = 1000000000*sec + 123456789 // 2001-09-09, with nanoseconds
)

func TestCopyFidelity(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data", 0o2775)
	b.chown("data", 1001, 1002)
	b.dir("data/sub/deeper", 0o700)
	b.dir("data/tmp", 0o1777)
	b.file("data/plain", "hello\n", 0o644)
	b.file("data/empty", "", 0o600)
	b.file("data/suid", "#!/bin/sh\n", 0o4755)
	b.chown("data/suid", 0, 0)
	b.file("data/sgid", "x", 0o2711)
	b.chown("data/sgid", 1234, 5678)
	b.file("data/sub/owned", "owned", 0o640)
	b.chown("data/sub/owned", 65534, 65533)
	b.file("data/sub/deeper/file", strings.Repeat("z", 100000), 0o444)
	b.symlink("/etc/passwd", "data/abs")
	b.symlink("../plain", "data/sub/rel")
	b.symlink("nowhere/at/all", "data/dangling")
	b.symlink("../../../../../..", "data/up")
	b.chown("data/abs", 4321, 4322)
	b.file("data/hl1", "linked", 0o640)
	b.link("data/hl1", "data/sub/hl2")
	b.link("data/hl1", "data/sub/deeper/hl3")
	b.link("data/hl1", "data/hl4")
	b.link("data/sub/owned", "data/sub/owned-again")
	b.symlink("target", "data/sl1")
	b.link("data/sl1", "data/sub/sl2")
	// A file with another name outside the copied tree is copied as a file.
	b.file("data/half", "half", 0o644)
	b.link("data/half", "outside-link")
	b.xattr("data/plain", "user.color", "blue")
	b.xattr("data/plain", "trusted.secret", "\x00\x01binary")
	b.xattr("data/sub", "user.dir", "yes")
	b.xattr("data", "user.root", "rootval")
	b.xattr("data/abs", "trusted.onlink", "linkval")
	for i, p := range []string{"data/plain", "data/empty", "data/suid", "data/sgid", "data/sub/owned", "data/abs",
		"data/sub/rel", "data/dangling", "data/hl1", "data/sub/deeper/file", "data/sub/deeper", "data/tmp", "data/sub", "data"} {
		b.times(p, t0+int64(i)*sec+int64(i), t0+int64(2*i)*sec+7*int64(i))
	}
	want := settled(t, b.path("data"))
	before := l.outside(t)

	st, err := Copy(l.rootfs, "/data", l.dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, want, snapshot(t, l.dst))
	sameTree(t, before, l.outside(t))
	wantStats := Stats{Files: 8, Dirs: 3, Symlinks: 5, Hardlinks: 5, Bytes: int64(len("hello\n#!/bin/sh\nxownedlinkedhalf") + 100000)}
	if st != wantStats {
		t.Errorf("stats: want %+v, got %+v", wantStats, st)
	}
}

func TestCopySparse(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data", 0o755)
	const size = 64 << 20
	f, err := os.Create(b.path("data/sparse"))
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("data"), 4096)
	for _, off := range []int64{0, 8 << 20, 40 << 20} {
		if _, err := f.WriteAt(payload, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var src unix.Stat_t
	if err := unix.Stat(b.path("data/sparse"), &src); err != nil {
		t.Fatal(err)
	}
	if src.Blocks*512 >= size {
		t.Skip("file system does not make sparse files")
	}

	if _, err := Copy(l.rootfs, "/data", l.dst, Options{}); err != nil {
		t.Fatal(err)
	}
	var dst unix.Stat_t
	if err := unix.Stat(filepath.Join(l.dst, "sparse"), &dst); err != nil {
		t.Fatal(err)
	}
	if dst.Size != size {
		t.Errorf("size: want %d, got %d", size, dst.Size)
	}
	if dst.Blocks > src.Blocks*2 {
		t.Errorf("copy is not sparse: %d blocks for the source's %d", dst.Blocks, src.Blocks)
	}
	a, _ := os.ReadFile(b.path("data/sparse"))
	c, _ := os.ReadFile(filepath.Join(l.dst, "sparse"))
	if !bytes.Equal(a, c) {
		t.Error("content differs")
	}
}

// TestCopyNothing covers targets that give no copy: dst is left as it was.
func TestCopyNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		build  func(b tree)
		target string
	}{
		{"missing", func(tree) {}, "/data"},
		{"missing parent", func(tree) {}, "/no/such/data"},
		{"file", func(b tree) { b.file("data", "x", 0o644) }, "/data"},
		{"file as parent", func(b tree) { b.file("data", "x", 0o644) }, "/data/sub"},
		{"symlink to file", func(b tree) { b.file("f", "x", 0o644); b.symlink("/f", "data") }, "/data"},
		{"dangling symlink", func(b tree) { b.symlink("/gone", "data") }, "/data"},
		{"fifo", func(b tree) { mknod(b.t, b.path("data"), unix.S_IFIFO|0o644, 0) }, "/data"},
		{"host path through absolute symlink", func(b tree) {
			b.symlink(filepath.Dir(b.root), "data") // the parent of rootfs, as the host sees it
		}, "/data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			tc.build(tree{t, l.rootfs})
			before := settled(t, filepath.Dir(l.dst))
			st, err := Copy(l.rootfs, tc.target, l.dst, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if st != (Stats{}) {
				t.Errorf("stats: want none, got %+v", st)
			}
			sameTree(t, before, snapshot(t, filepath.Dir(l.dst)))
		})
	}
}

func TestCopyEmptySource(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data", 0o1750)
	b.chown("data", 999, 998)
	b.times("data", t0, t0+sec)
	want := settled(t, b.path("data"))
	st, err := Copy(l.rootfs, "/data", l.dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st != (Stats{}) {
		t.Errorf("stats: want none, got %+v", st)
	}
	sameTree(t, want, snapshot(t, l.dst))
}

func mknod(t *testing.T, p string, mode uint32, dev int) {
	t.Helper()
	if err := unix.Mknod(p, mode, dev); err != nil {
		t.Fatal(err)
	}
}

func TestCopySkipsSpecialFiles(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data/sub", 0o755)
	mknod(t, b.path("data/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
	mknod(t, b.path("data/sub/disk"), unix.S_IFBLK|0o660, int(unix.Mkdev(7, 0)))
	mknod(t, b.path("data/fifo"), unix.S_IFIFO|0o644, 0)
	mknod(t, b.path("data/sock"), unix.S_IFSOCK|0o755, 0)
	b.file("data/keep", "keep", 0o644)
	st, err := Copy(l.rootfs, "/data", l.dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := keys(snapshot(t, l.dst))
	if want := []string{".", "keep", "sub"}; !slices.Equal(got, want) {
		t.Errorf("entries: want %v, got %v", want, got)
	}
	if st.Skipped != 4 || st.Files != 1 || st.Dirs != 1 {
		t.Errorf("stats: want 4 skipped, 1 file, 1 dir; got %+v", st)
	}
}

// TestCopyEscapes gives Copy images whose target leads out of the rootfs,
// and checks that the copy came from inside it and wrote only into dst.
func TestCopyEscapes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		build  func(b tree)
		target string
		want   []string // entries of dst
	}{
		{"absolute symlink to root", func(b tree) { b.symlink("/", "data") }, "/data",
			[]string{".", "data", "etc", "etc/inside"}},
		{"relative symlink above root", func(b tree) { b.symlink("../../../../../../..", "data") }, "/data",
			[]string{".", "data", "etc", "etc/inside"}},
		{"parent symlink to /etc", func(b tree) { b.symlink("/etc", "a"); b.dir("etc/x", 0o755); b.file("etc/x/in-x", "", 0o644) },
			"/a/x", []string{".", "in-x"}},
		{"symlink to /etc", func(b tree) { b.symlink("/etc", "a") }, "/a",
			[]string{".", "inside"}},
		{"dot-dot target", func(tree) {}, "/../../etc", []string{".", "inside"}},
		{"dot-dot through a directory", func(b tree) { b.dir("d", 0o755) }, "/d/../../../../etc/", []string{".", "inside"}},
		{"trailing slash", func(tree) {}, "/etc/", []string{".", "inside"}},
		{"symlink chain", func(b tree) { b.symlink("../b", "a"); b.symlink("/../../../etc", "b") }, "/a",
			[]string{".", "inside"}},
		{"links inside the tree are not followed", func(b tree) {
			b.dir("data", 0o755)
			b.symlink("/", "data/root")
			b.symlink("../../../..", "data/up")
		}, "/data", []string{".", "root", "up"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			b := tree{t, l.rootfs}
			b.dir("etc", 0o755)
			b.file("etc/inside", "inside", 0o644)
			tc.build(b)
			before := l.outside(t)
			if _, err := Copy(l.rootfs, tc.target, l.dst, Options{}); err != nil {
				t.Fatal(err)
			}
			if got := keys(snapshot(t, l.dst)); !slices.Equal(got, tc.want) {
				t.Errorf("dst: want %v, got %v", tc.want, got)
			}
			sameTree(t, before, l.outside(t))
		})
	}
}

func TestCopyDestNotEmpty(t *testing.T) {
	for _, planted := range []func(dst string) error{
		func(dst string) error { return os.Symlink("/etc", filepath.Join(dst, "data")) },
		func(dst string) error { return os.WriteFile(filepath.Join(dst, "f"), nil, 0o644) },
		func(dst string) error { return os.Mkdir(filepath.Join(dst, ".hidden"), 0o755) },
	} {
		l := newLayout(t)
		b := tree{t, l.rootfs}
		b.dir("data/etc", 0o755)
		b.file("data/etc/passwd", "evil", 0o644)
		if err := planted(l.dst); err != nil {
			t.Fatal(err)
		}
		before := settled(t, l.dst)
		_, err := Copy(l.rootfs, "/data", l.dst, Options{})
		if !errors.Is(err, ErrNotEmpty) {
			t.Errorf("want ErrNotEmpty, got %v", err)
		}
		sameTree(t, before, snapshot(t, l.dst))
	}
}

func TestCopyDestSymlink(t *testing.T) {
	l := newLayout(t)
	tree{t, l.rootfs}.dir("data", 0o755)
	link := filepath.Join(filepath.Dir(l.dst), "link")
	if err := os.Symlink(l.dst, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(l.rootfs, "/data", link, Options{}); !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.ELOOP) {
		t.Errorf("want ELOOP or ENOTDIR for a dst that is a symlink, got %v", err)
	}
}

func TestCopyLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  Options
		field string
	}{
		{"files", Options{MaxFiles: 5}, "MaxFiles"},
		{"bytes", Options{MaxBytes: 2500}, "MaxBytes"},
		{"bytes of one file", Options{MaxBytes: 999}, "MaxBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLayout(t)
			b := tree{t, l.rootfs}
			b.dir("data/a/b", 0o755)
			for _, p := range []string{"data/1", "data/a/2", "data/a/b/3", "data/a/b/4"} {
				b.file(p, strings.Repeat("x", 1000), 0o644)
			}
			before := settled(t, l.dst)
			_, err := Copy(l.rootfs, "/data", l.dst, tc.opts)
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("want ErrLimit naming %s, got %v", tc.field, err)
			}
			// A failed copy leaves dst as it found it, so a retry can run.
			sameTree(t, before, snapshot(t, l.dst))
		})
	}
	t.Run("within", func(t *testing.T) {
		l := newLayout(t)
		b := tree{t, l.rootfs}
		b.dir("data/a", 0o755)
		b.file("data/a/1", "12345", 0o644)
		st, err := Copy(l.rootfs, "/data", l.dst, Options{MaxFiles: 2, MaxBytes: 5})
		if err != nil {
			t.Fatal(err)
		}
		if st.Files != 1 || st.Dirs != 1 || st.Bytes != 5 {
			t.Errorf("stats: %+v", st)
		}
	})
}

// TestCopyHardlinkMemoryBounded: the memory that tracking hard-linked files
// takes is bounded by MaxLinkBytes, which only inodes with several links and
// long paths use up; past it the copy fails clearly and leaves dst empty.
func TestCopyHardlinkMemoryBounded(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	long := strings.Repeat("p", 200)
	b.dir("data/"+long, 0o755)
	for i := range 20 {
		name := fmt.Sprintf("data/%s/%02d", long, i)
		b.file(name, "x", 0o644)
		b.link(name, name+"-link")
	}
	for i := range 1000 {
		b.file(fmt.Sprintf("data/single-%d", i), "x", 0o644)
	}
	// Room for 10 tracked inodes: the 1000 files of one link take none.
	perInode := int64(len(long)+len("/00-link")) + linkRecordBytes
	before := settled(t, l.dst)
	_, err := Copy(l.rootfs, "/data", l.dst, Options{MaxLinkBytes: 10 * perInode})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "MaxLinkBytes") {
		t.Fatalf("want ErrLimit naming MaxLinkBytes, got %v", err)
	}
	sameTree(t, before, snapshot(t, l.dst))

	st, err := Copy(l.rootfs, "/data", l.dst, Options{MaxLinkBytes: 20 * perInode})
	if err != nil {
		t.Fatal(err)
	}
	if st.Hardlinks != 20 || st.Files != 1020 {
		t.Errorf("stats: %+v", st)
	}
}

// TestCopySkipsMounts mounts a tmpfs inside the source tree; its content is
// no part of the image.
func TestCopySkipsMounts(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data/mnt", 0o755)
	b.file("data/keep", "", 0o644)
	if err := unix.Mount("tmpfs", b.path("data/mnt"), "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(b.path("data/mnt"), unix.MNT_DETACH) })
	b.file("data/mnt/hidden", "", 0o644)
	st, err := Copy(l.rootfs, "/data", l.dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(snapshot(t, l.dst)), []string{".", "keep"}; !slices.Equal(got, want) {
		t.Errorf("dst: want %v, got %v", want, got)
	}
	if st.Skipped != 1 {
		t.Errorf("stats: want 1 skipped, got %+v", st)
	}
}

func TestCopyDeepTree(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data", 0o755)
	// Deeper than PATH_MAX allows naming in one path, built with openat.
	fd, err := unix.Open(b.path("data"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 200)
	const depth = 100
	for range depth {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	st, err := Copy(l.rootfs, "/data", l.dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Dirs != depth {
		t.Errorf("dirs: want %d, got %+v", depth, st)
	}
	t.Cleanup(func() {
		// os.RemoveAll copes with paths longer than PATH_MAX.
		os.RemoveAll(l.base)
	})
}

// TestCopyDataReadWrite covers the read/write fallback used where
// copy_file_range cannot copy between the two file systems.
func TestCopyDataReadWrite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sparse bool
	}{{"dense", false}, {"sparse", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			want := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+5) // not a multiple of the buffer
			f, err := os.Create(filepath.Join(dir, "src"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(want); err != nil {
				t.Fatal(err)
			}
			if tc.sparse {
				if err := f.Truncate(16 << 20); err != nil {
					t.Fatal(err)
				}
				want = append(want, make([]byte, 16<<20-len(want))...)
			}
			f.Close()
			src, err := unix.Open(filepath.Join(dir, "src"), unix.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(src)
			dst, err := unix.Open(filepath.Join(dir, "dst"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(dst)
			var st unix.Stat_t
			if err := unix.Fstat(src, &st); err != nil {
				t.Fatal(err)
			}
			c := newCopier("/", uint64(st.Dev), devIno{}, Options{})
			c.data.NoCopyFileRange = true
			if err := c.data.CopyData(dst, src, &st); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "dst"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("copy differs: %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// TestCopyFromOverlay copies from an overlay mount, as containerd's rootfs
// is: the layers' content, upper over lower, with whiteouts hiding files.
func TestCopyFromOverlay(t *testing.T) {
	l := newLayout(t)
	layers := filepath.Join(l.base, "layers")
	lower, upper, work := tree{t, filepath.Join(layers, "lower")}, tree{t, filepath.Join(layers, "upper")}, filepath.Join(layers, "work")
	lower.dir("data/sub", 0o750)
	lower.file("data/sub/base", "base", 0o644)
	lower.file("data/gone", "gone", 0o644)
	lower.file("data/big", strings.Repeat("b", 1<<20), 0o644)
	lower.xattr("data/sub/base", "user.layer", "lower")
	upper.dir("data", 0o755)
	upper.file("data/new", "new", 0o600)
	upper.symlink("sub/base", "data/link")
	mknod(t, upper.path("data/gone"), unix.S_IFCHR, 0) // a whiteout
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "lowerdir=" + lower.root + ",upperdir=" + upper.root + ",workdir=" + work
	// noatime: reading a symlink through the overlay may bump its atime
	// after the snapshot, which would make the test flaky, not the copy.
	if err := unix.Mount("overlay", l.rootfs, "overlay", unix.MS_NOATIME, opts); err != nil {
		t.Skipf("cannot mount overlay: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(l.rootfs, unix.MNT_DETACH) })
	want := settled(t, filepath.Join(l.rootfs, "data"))

	st, err := Copy(l.rootfs, "/data", l.dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, want, snapshot(t, l.dst))
	if got := keys(want); !slices.Equal(got, []string{".", "big", "link", "new", "sub", "sub/base"}) {
		t.Errorf("overlay shows %v", got)
	}
	if st.Files != 3 || st.Symlinks != 1 || st.Dirs != 1 || st.Skipped != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestCopyDestInsideSource copies a tree that holds the destination: the
// copy must not chase itself.
func TestCopyDestInsideSource(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data/vol/_data", 0o755)
	b.file("data/f", "f", 0o644)
	st, err := Copy(l.rootfs, "/data", b.path("data/vol/_data"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(snapshot(t, b.path("data/vol/_data"))), []string{".", "f", "vol"}; !slices.Equal(got, want) {
		t.Errorf("dst: want %v, got %v", want, got)
	}
	if st.Skipped != 1 {
		t.Errorf("stats: %+v", st)
	}
}
