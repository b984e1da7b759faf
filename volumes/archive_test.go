package volumes

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
)

// describe records everything a round trip must keep of each entry below
// dir: type, mode with set-id bits, owner, mtime to the nanosecond, content,
// symlink target, extended attributes, and which entries share an inode.
func describe(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		d := fmt.Sprintf("mode=%o uid=%d gid=%d", st.Mode, st.Uid, st.Gid)
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			d += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			d += fmt.Sprintf(" data=%q", data)
			if first, ok := inodes[st.Ino]; ok {
				d += " same-inode-as=" + first
			} else {
				inodes[st.Ino] = rel
			}
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			d += " -> " + target
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			buf := make([]byte, 4096)
			n, _ := unix.Llistxattr(p, buf)
			names := strings.Split(strings.Trim(string(buf[:n]), "\x00"), "\x00")
			slices.Sort(names)
			for _, x := range names {
				if x == "" {
					continue
				}
				v := make([]byte, 4096)
				m, _ := unix.Lgetxattr(p, x, v)
				d += fmt.Sprintf(" %s=%q", x, v[:m])
			}
		}
		out[rel] = d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fillTree makes a tree with everything Export must keep.
func fillTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc/app/empty"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "etc/app/app.conf"), []byte("port=80\n"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "setuid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(filepath.Join(dir, "setuid"), 0, 0))
	must(unix.Chmod(filepath.Join(dir, "setuid"), 0o4755))
	must(os.WriteFile(filepath.Join(dir, "etc/app/big"), bytes.Repeat([]byte("x"), 100_000), 0o600))
	must(os.Link(filepath.Join(dir, "etc/app/app.conf"), filepath.Join(dir, "hardlink")))
	must(os.Symlink("/etc/passwd", filepath.Join(dir, "abs-link")))
	must(os.Symlink("../../nowhere", filepath.Join(dir, "etc/dangling")))
	must(os.Mkdir(filepath.Join(dir, "sticky"), 0o1777))
	must(unix.Chmod(filepath.Join(dir, "sticky"), 0o1777))
	must(os.Lchown(filepath.Join(dir, "etc/app"), 1234, 5678))
	must(os.Lchown(filepath.Join(dir, "abs-link"), 42, 43))
	must(os.Chown(filepath.Join(dir, "etc/app/big"), 999, 998))
	must(unix.Setxattr(filepath.Join(dir, "etc/app/app.conf"), "user.origin", []byte("image"), 0))
	must(unix.Setxattr(filepath.Join(dir, "etc/app"), "user.dir", []byte("yes"), 0))
	must(unix.Setxattr(filepath.Join(dir, "etc/app"), "trusted.overlay.x", []byte{0, 1, 2}, 0))
	must(os.Chmod(dir, 0o750))
	must(os.Chown(dir, 70, 71))
	// Times last, deepest first, so no write moves them.
	stamp := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
	var paths []string
	must(filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []unix.Timespec{unix.NsecToTimespec(stamp.UnixNano()), unix.NsecToTimespec(stamp.Add(time.Duration(i) * time.Second).UnixNano())}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	s := newTestStore(t)
	src, err := s.Create("default", "src", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fillTree(t, src.Mountpoint)
	want := describe(t, src.Mountpoint)

	var buf bytes.Buffer
	stats, err := s.Export("default", "src", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Entries != int64(len(want)) || stats.Skipped != 0 {
		t.Errorf("export stats %+v, want %d entries", stats, len(want))
	}
	if after := describe(t, src.Mountpoint); !equalMaps(want, after) {
		t.Errorf("export changed the source")
	}
	dst, err := s.Create("shop", "dst", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("shop", "dst", bytes.NewReader(buf.Bytes()), ArchiveLimits{MaxFiles: 100, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	got := describe(t, dst.Mountpoint)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s:\n got %s\nwant %s", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s appeared: %s", k, got[k])
		}
	}
	if _, err := s.Import("shop", "dst", bytes.NewReader(buf.Bytes()), ArchiveLimits{}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("import into a filled volume: %v", err)
	}
}

// TestImportRefusesVolumeInUse: a failed import empties the volume again,
// which would delete what a container using it wrote. So, as volume rm,
// import refuses a volume in use, naming the container, and changes nothing;
// once the container is gone it imports.
func TestImportRefusesVolumeInUse(t *testing.T) {
	s, _ := newStore(t)
	vols, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "data"}})
	if err != nil {
		t.Fatal(err)
	}
	data := vols[0].Mountpoint
	tarball := tarOf(t, file("a", "a"))
	_, err = s.Import("default", "data", bytes.NewReader(tarball), ArchiveLimits{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "c1") {
		t.Fatalf("import into volume data used by c1 = %v, want ErrInUse naming c1", err)
	}
	if _, err := os.Lstat(filepath.Join(data, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused import wrote into the volume: %v", err)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("default", "data", bytes.NewReader(tarball), ArchiveLimits{}); err != nil {
		t.Fatalf("import once c1 is gone: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "a")); err != nil || string(b) != "a" {
		t.Errorf("imported file a = %q, %v", b, err)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// tarOf builds a tar from headers; a regular file's content is its Linkname
// field's length of "x" unless body is set.
type entry struct {
	hdr  tar.Header
	body string
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func file(name, body string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}

func TestImportRefusesHostileTars(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tar     []entry
		limits  ArchiveLimits
		wantErr string
	}{
		{"dotdot", []entry{file("ok", "1"), file("../../../victim", "owned")}, ArchiveLimits{}, `"../../../victim"`},
		{"dotdot inside", []entry{file("a/../../victim", "owned")}, ArchiveLimits{}, `"a/../../victim"`},
		{"absolute", []entry{file(outside+"/victim", "owned")}, ArchiveLimits{}, "not a relative path"},
		{"beneath a symlink", []entry{
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside}},
			file("link/victim", "owned"),
		}, ArchiveLimits{}, `"link/victim": beneath a symlink`},
		{"beneath a symlink to a directory in the volume", []entry{
			{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}},
			{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d"}},
			file("l/x", "y"),
		}, ArchiveLimits{}, `"l/x": beneath a symlink`},
		{"file over a symlink", []entry{
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside + "/victim"}},
			file("link", "owned"),
		}, ArchiveLimits{}, `"link": a second entry`},
		{"hard link outside", []entry{
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../victim"}},
		}, ArchiveLimits{}, `"h": hard link`},
		{"hard link to a symlink", []entry{
			{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside + "/victim"}},
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "link"}},
		}, ArchiveLimits{}, `"h": hard link`},
		{"device", []entry{{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}}, ArchiveLimits{}, `"null": device nodes`},
		{"fifo", []entry{{hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo}}}, ArchiveLimits{}, `"p": device nodes and FIFOs`},
		{"too many entries", []entry{file("a", "1"), file("b", "2"), file("c", "3")}, ArchiveLimits{MaxFiles: 2}, `"c": more than 2 entries`},
		{"too many bytes", []entry{file("a", "12345"), file("b", "123456")}, ArchiveLimits{MaxBytes: 10}, `"b": more than 10 bytes`},
		{"root not a directory", []entry{file(".", "x")}, ArchiveLimits{}, "root must be a directory"},
		{"truncated", nil, ArchiveLimits{}, `"a": the tar is truncated`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			v, err := s.Create("default", "v", CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(v.Mountpoint, 0o711); err != nil {
				t.Fatal(err)
			}
			beforeData := describe(t, v.Mountpoint)
			beforeOutside := fstree.Snapshot(t, outside)
			data := tarOf(t, tt.tar...)
			if tt.tar == nil {
				data = tarOf(t, file("a", strings.Repeat("z", 2000)))[:700]
			}
			_, err = s.Import("default", "v", bytes.NewReader(data), tt.limits)
			if !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("import: %v, want ErrArchive naming %s", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), `volume "v"`) {
				t.Errorf("error does not name the volume: %v", err)
			}
			if after := describe(t, v.Mountpoint); !equalMaps(beforeData, after) {
				t.Errorf("volume not left as it was:\nbefore %v\nafter  %v", beforeData, after)
			}
			fstree.Same(t, "outside", beforeOutside, fstree.Snapshot(t, outside))
		})
	}
}

func TestImportRootAndImplicitParents(t *testing.T) {
	s := newTestStore(t)
	v, err := s.Create("default", "v", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data := tarOf(t,
		entry{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 5, Gid: 6}},
		file("./deep/er/file", "content"),
		entry{hdr: tar.Header{Name: "deep/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 7}},
	)
	stats, err := s.Import("default", "v", bytes.NewReader(data), ArchiveLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Entries != 3 || stats.Bytes != 7 {
		t.Errorf("stats %+v", stats)
	}
	var st unix.Stat_t
	if err := unix.Stat(v.Mountpoint, &st); err != nil || st.Mode&0o7777 != 0o1777 || st.Uid != 5 || st.Gid != 6 {
		t.Errorf("_data: mode %o uid %d gid %d (%v)", st.Mode&0o7777, st.Uid, st.Gid, err)
	}
	if err := unix.Stat(filepath.Join(v.Mountpoint, "deep"), &st); err != nil || st.Mode&0o7777 != 0o755 || st.Uid != 7 {
		t.Errorf("deep: mode %o uid %d (%v)", st.Mode&0o7777, st.Uid, err)
	}
	if b, err := os.ReadFile(filepath.Join(v.Mountpoint, "deep/er/file")); err != nil || string(b) != "content" {
		t.Errorf("deep/er/file: %q %v", b, err)
	}
	if _, err := s.Import("default", "missing", bytes.NewReader(data), ArchiveLimits{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("import into a missing volume: %v", err)
	}
}

func TestExportSkipsSpecialFiles(t *testing.T) {
	s := newTestStore(t)
	v, err := s.Create("default", "v", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(v.Mountpoint, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.Mountpoint, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	stats, err := s.Export("default", "v", &buf)
	if err != nil || stats.Skipped != 1 || stats.Entries != 2 {
		t.Fatalf("export: %+v %v", stats, err)
	}
	w, err := s.Create("default", "w", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("default", "w", &buf, ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(w.Mountpoint); len(names) != 1 || names[0].Name() != "f" {
		t.Errorf("imported %v", names)
	}
}

func newTestStore(t *testing.T) *Store {
	t.Helper()
	s, _ := newStore(t)
	return s
}
