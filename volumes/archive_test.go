package volumes

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
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
	vols, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "data"}}, nil)
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
		{"xattr over the kernel's maximum", []entry{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": strings.Repeat("v", 64<<10+1)}}}},
			ArchiveLimits{}, `"d/": extended attribute user.x: 65537 bytes`},
		{"xattrs count against the bytes", []entry{file("a", "12345"), {hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": strings.Repeat("v", 100)}}}},
			ArchiveLimits{MaxBytes: 50}, `"d/": more than 50 bytes`},
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

// TestImportSparseKeepsHoles imports a PAX-sparse tar of a few KiB whose
// file is 1 GiB long with 4 KiB of data: the file gets its logical size and
// its data, and the holes stay holes instead of a gibibyte of zeros on disk.
func TestImportSparseKeepsHoles(t *testing.T) {
	s := newTestStore(t)
	v, err := s.Create("default", "v", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const logical, at = 1 << 30, 512 << 20
	chunk := bytes.Repeat([]byte("data"), 1024)
	data := sparseTar(t, "big", logical, at, chunk)
	if len(data) > 10<<10 {
		t.Fatalf("the sparse tar takes %d bytes", len(data))
	}
	if _, err := s.Import("default", "v", bytes.NewReader(data), ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(v.Mountpoint, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != logical {
		t.Errorf("size %d, want %d", st.Size, logical)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Errorf("the file takes %d bytes on disk, want its holes kept (at most 1 MiB)", used)
	}
	got := make([]byte, len(chunk)+2)
	if _, err := f.ReadAt(got, at-1); err != nil || got[0] != 0 || got[len(got)-1] != 0 || !bytes.Equal(got[1:len(got)-1], chunk) {
		t.Errorf("data at %d: %q… (%v)", at, got[:9], err)
	}
	// The limit counts the logical size, what a reader of the file gets.
	if _, err := s.Create("default", "w", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("default", "w", bytes.NewReader(data), ArchiveLimits{MaxBytes: logical - 1}); !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), `"big": more than`) {
		t.Errorf("import of a file longer than MaxBytes: %v, want ErrArchive naming \"big\"", err)
	}
}

// sparseTar writes a tar of one file name in the PAX 1.0 sparse format, as
// GNU tar --sparse --format=pax does, which archive/tar reads but cannot
// write: size bytes long, all holes but data at offset.
func sparseTar(t *testing.T, name string, size, offset int64, data []byte) []byte {
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

// TestImportHoldsContainersOut: while an import fills a volume, a container
// that asks for it, through another process's store as the plugin's is, is
// refused with a message that says why, so it never sees half an import,
// and the failed import that empties the volume again deletes nothing a
// container wrote. Once the import is over the container gets the volume.
func TestImportHoldsContainersOut(t *testing.T) {
	cli, root := newStore(t)
	plugin := openStore(t, root)
	v, err := cli.Create("default", "data", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := cli.Import("default", "data", pr, ArchiveLimits{})
		done <- err
	}()
	tw := tar.NewWriter(pw)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 10}); err != nil {
		t.Fatal(err)
	}
	// The pipe hands these bytes over only to the import's copy of "a".
	if _, err := tw.Write([]byte("12345")); err != nil {
		t.Fatal(err)
	}
	req := []Request{{Namespace: "default", Name: "data"}}
	_, _, err = plugin.Acquire("c1", req, nil)
	wrote := err == nil
	if wrote {
		writeFile(t, filepath.Join(v.Mountpoint, "mine"), "the container's")
	}
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), `volume "data"`) || !strings.Contains(err.Error(), "import") {
		t.Errorf("acquire during the import = %v, want ErrInUse naming the volume and the import", err)
	}
	pw.CloseWithError(errors.New("cut short"))
	if err := <-done; err == nil {
		t.Fatal("an import cut short succeeded")
	}
	if _, err := os.Stat(filepath.Join(v.Mountpoint, "mine")); wrote && err != nil {
		t.Errorf("the failed import deleted what the container wrote: %v", err)
	}
	if _, _, err := plugin.Acquire("c2", req, nil); err != nil {
		t.Fatalf("acquire after the import: %v", err)
	}
	if names, err := os.ReadDir(v.Mountpoint); err != nil || len(names) > 1 {
		t.Errorf("_data after the failed import: %v %v", names, err)
	}
}

// TestImportCutShort: an import killed part-way leaves its marker, unlocked,
// beside partial data. A container is refused that volume with a message
// that says what to do, and volume check reports it; the next import throws
// the partial data away and fills the volume, and then containers get it.
func TestImportCutShort(t *testing.T) {
	s := newTestStore(t)
	v, err := s.Create("default", "data", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What a kill leaves: the marker, which no process locks, and half the data.
	writeFile(t, filepath.Join(filepath.Dir(v.Mountpoint), importMarker), "")
	writeFile(t, filepath.Join(v.Mountpoint, "half"), "partial")
	req := []Request{{Namespace: "default", Name: "data"}}
	if _, _, err := s.Acquire("c1", req, nil); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("acquire after a cut-short import = %v, want ErrInUse saying the import was cut short", err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 1 || probs[0].Name != "data" || !strings.Contains(probs[0].Reason, "cut short") {
		t.Errorf("check after a cut-short import = %+v, %v; want the volume reported", probs, err)
	}
	if _, err := s.Import("default", "data", bytes.NewReader(tarOf(t, file("whole", "all"))), ArchiveLimits{}); err != nil {
		t.Fatalf("import again: %v", err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("check after the second import = %+v, %v", probs, err)
	}
	if names, err := os.ReadDir(v.Mountpoint); err != nil || len(names) != 1 || names[0].Name() != "whole" {
		t.Errorf("_data after the second import: %v %v", names, err)
	}
	if _, _, err := s.Acquire("c1", req, nil); err != nil {
		t.Errorf("acquire after the import: %v", err)
	}
}

// TestImportKeepsFileCapabilities imports a file owned by another user that
// carries a security.capability xattr, as ping or an image's server binary
// does: the kernel drops that xattr on chown, so it must be set after the
// owner, or the imported binary silently loses its capabilities.
func TestImportKeepsFileCapabilities(t *testing.T) {
	testutil.RequireRoot(t, "needs root to chown and set security.* xattrs")
	s := newTestStore(t)
	if _, err := s.Create("default", "v", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// VFS_CAP_REVISION_2 with the effective flag, CAP_NET_BIND_SERVICE (10)
	// permitted: magic, then permitted and inheritable of two 32-bit words.
	capability := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	e := file("ping", "elf")
	e.hdr.Uid, e.hdr.Gid, e.hdr.Mode = 1000, 1000, 0o755
	e.hdr.PAXRecords = map[string]string{xattrPrefix + "security.capability": string(capability)}
	if _, err := s.Import("default", "v", bytes.NewReader(tarOf(t, e)), ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.root, "volumes", "default", "v", "_data", "ping")
	buf := make([]byte, 64)
	n, err := unix.Getxattr(p, "security.capability", buf)
	if err != nil {
		t.Fatalf("the imported file lost its capabilities: %v", err)
	}
	if !bytes.Equal(buf[:n], capability) {
		t.Fatalf("security.capability = %x, want %x", buf[:n], capability)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Uid != 1000 {
		t.Fatalf("owner %d (%v), want 1000", st.Uid, err)
	}
}
