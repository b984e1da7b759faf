// Package archivetest builds the trees and tars that the tests of the
// archive package and of the volume store share, and describes a tree so
// that a test can prove an archive kept it, or that a refused one left it
// as it was. Only tests import it.
package archivetest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/volumes/internal/archive"
)

// Describe records everything a round trip must keep of each entry below
// dir: type, mode with set-id bits, owner, mtime to the nanosecond, content,
// symlink target, extended attributes, and which entries share an inode.
func Describe(t testing.TB, dir string) map[string]string {
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

// FillTree makes a tree below dir with everything an archive must keep.
func FillTree(t testing.TB, dir string) {
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

// Entry is one entry of a tar that Tar builds: its header and, for a
// regular file, its content, whose length Tar sets as the header's size.
type Entry struct {
	Hdr  tar.Header
	Body string
}

// Tar builds a tar of entries, each of mode 0644 unless its header says.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// File is the entry of regular file name holding body.
func File(name, body string) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, Body: body}
}

// SparseTar writes a tar of one file name in the PAX 1.0 sparse format, as
// GNU tar --sparse --format=pax does, which archive/tar reads but cannot
// write: size bytes long, all holes but data at offset.
func SparseTar(t testing.TB, name string, size, offset int64, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	block := func(typ byte, name string, size int64) {
		var b [512]byte
		copy(b[0:100], name)
		copy(b[100:108], "0000644\x00")
		copy(b[108:116], "0000000\x00")
		copy(b[116:124], "0000000\x00")
		copy(b[124:136], fmt.Sprintf("%011o\x00", size))
		copy(b[136:148], fmt.Sprintf("%011o\x00", 1700000000))
		b[156] = typ
		copy(b[257:265], "ustar\x0000")
		copy(b[148:156], "        ")
		sum := 0
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
		out.Write(b[:])
	}
	pad := func() { out.Write(make([]byte, (512-out.Len()%512)%512)) }
	var pax bytes.Buffer
	for _, kv := range []string{"GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name=" + name,
		fmt.Sprintf("GNU.sparse.realsize=%d", size)} {
		n := len(kv) + 3
		for len(fmt.Sprintf("%d %s\n", n, kv)) != n {
			n++
		}
		fmt.Fprintf(&pax, "%d %s\n", n, kv)
	}
	block(tar.TypeXHeader, "PaxHeaders/"+name, int64(pax.Len()))
	out.Write(pax.Bytes())
	pad()
	sparseMap := fmt.Sprintf("1\n%d\n%d\n", offset, len(data))
	mapLen := int64(len(sparseMap)+511) / 512 * 512
	block(tar.TypeReg, "GNUSparseFile.0/"+name, mapLen+int64(len(data)))
	out.WriteString(sparseMap)
	pad()
	out.Write(data)
	pad()
	out.Write(make([]byte, 1024))
	return out.Bytes()
}

// Hostile is one tar that the archive refuses, and what the error names.
type Hostile struct {
	Name string
	// Tar is the archive; Limits bound what is read of it.
	Tar    []byte
	Limits archive.Limits
	// WantErr is in the error, which names the entry.
	WantErr string
}

// HostileTars are tars that try to write outside the directory they fill,
// at outside, or that break the rules or limits of an import.
func HostileTars(t testing.TB, outside string) []Hostile {
	t.Helper()
	cases := []struct {
		name    string
		tar     []Entry
		limits  archive.Limits
		wantErr string
	}{
		{"dotdot", []Entry{File("ok", "1"), File("../../../victim", "owned")}, archive.Limits{}, `"../../../victim"`},
		{"dotdot inside", []Entry{File("a/../../victim", "owned")}, archive.Limits{}, `"a/../../victim"`},
		{"absolute", []Entry{File(outside+"/victim", "owned")}, archive.Limits{}, "not a relative path"},
		{"beneath a symlink", []Entry{
			{Hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside}},
			File("link/victim", "owned"),
		}, archive.Limits{}, `"link/victim": beneath a symlink`},
		{"beneath a symlink to a directory in the volume", []Entry{
			{Hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}},
			{Hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d"}},
			File("l/x", "y"),
		}, archive.Limits{}, `"l/x": beneath a symlink`},
		{"file over a symlink", []Entry{
			{Hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside + "/victim"}},
			File("link", "owned"),
		}, archive.Limits{}, `"link": a second entry`},
		{"hard link outside", []Entry{
			{Hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../victim"}},
		}, archive.Limits{}, `"h": hard link`},
		{"hard link to a symlink", []Entry{
			{Hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside + "/victim"}},
			{Hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "link"}},
		}, archive.Limits{}, `"h": hard link`},
		{"device", []Entry{{Hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}}, archive.Limits{}, `"null": device nodes`},
		{"fifo", []Entry{{Hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo}}}, archive.Limits{}, `"p": device nodes and FIFOs`},
		{"too many entries", []Entry{File("a", "1"), File("b", "2"), File("c", "3")}, archive.Limits{MaxFiles: 2}, `"c": more than 2 entries`},
		{"too many bytes", []Entry{File("a", "12345"), File("b", "123456")}, archive.Limits{MaxBytes: 10}, `"b": more than 10 bytes`},
		{"root not a directory", []Entry{File(".", "x")}, archive.Limits{}, "root must be a directory"},
		{"truncated", nil, archive.Limits{}, `"a": the tar is truncated`},
		{"xattr over the kernel's maximum", []Entry{{Hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": strings.Repeat("v", 64<<10+1)}}}},
			archive.Limits{}, `"d/": extended attribute user.x: 65537 bytes`},
		{"xattrs count against the bytes", []Entry{File("a", "12345"), {Hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": strings.Repeat("v", 100)}}}},
			archive.Limits{MaxBytes: 50}, `"d/": more than 50 bytes`},
	}
	var out []Hostile
	for _, c := range cases {
		data := Tar(t, c.tar...)
		if c.tar == nil {
			data = Tar(t, File("a", strings.Repeat("z", 2000)))[:700]
		}
		out = append(out, Hostile{Name: c.name, Tar: data, Limits: c.limits, WantErr: c.wantErr})
	}
	return out
}
