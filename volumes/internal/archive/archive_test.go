package archive_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/volumes/internal/archive"
	"github.com/nri-volumes/nri-volumes/volumes/internal/archive/archivetest"
)

// openDir opens dir for a test, closed when the test ends.
func openDir(t testing.TB, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// writeTar writes the tree below dir as a tar to w.
func writeTar(t testing.TB, dir string, w io.Writer) (archive.Stats, error) {
	t.Helper()
	fd := openDir(t, dir)
	var root unix.Stat_t
	if err := unix.Fstat(fd, &root); err != nil {
		t.Fatal(err)
	}
	return archive.Write(fd, &root, w)
}

// readTar fills dir from the tar r.
func readTar(t testing.TB, dir string, r io.Reader, limits archive.Limits) (archive.Stats, error) {
	t.Helper()
	return archive.Read(openDir(t, dir), r, limits)
}

func TestWriteReadRoundTrip(t *testing.T) {
	src := t.TempDir()
	archivetest.FillTree(t, src)
	want := archivetest.Describe(t, src)

	var buf bytes.Buffer
	stats, err := writeTar(t, src, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Entries != int64(len(want)) || stats.Skipped != 0 {
		t.Errorf("write stats %+v, want %d entries", stats, len(want))
	}
	if after := archivetest.Describe(t, src); !maps.Equal(want, after) {
		t.Errorf("write changed the source")
	}
	dst := t.TempDir()
	if _, err := readTar(t, dst, bytes.NewReader(buf.Bytes()), archive.Limits{MaxFiles: 100, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	fstree.Same(t, "round trip", want, archivetest.Describe(t, dst))
}

// TestReadRefusesHostileTars: each hostile tar is refused with ErrRefused
// and a message that names its entry, and nothing outside the directory it
// fills is touched. Emptying that directory again is the caller's.
func TestReadRefusesHostileTars(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range archivetest.HostileTars(t, outside) {
		t.Run(tt.Name, func(t *testing.T) {
			beforeOutside := fstree.Snapshot(t, outside)
			_, err := readTar(t, t.TempDir(), bytes.NewReader(tt.Tar), tt.Limits)
			if !errors.Is(err, archive.ErrRefused) || !strings.Contains(err.Error(), tt.WantErr) {
				t.Fatalf("read: %v, want ErrRefused naming %s", err, tt.WantErr)
			}
			fstree.Same(t, "outside", beforeOutside, fstree.Snapshot(t, outside))
		})
	}
}

func TestReadRootAndImplicitParents(t *testing.T) {
	dir := t.TempDir()
	data := archivetest.Tar(t,
		archivetest.Entry{Hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 5, Gid: 6}},
		archivetest.File("./deep/er/file", "content"),
		archivetest.Entry{Hdr: tar.Header{Name: "deep/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 7}},
	)
	stats, err := readTar(t, dir, bytes.NewReader(data), archive.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Entries != 3 || stats.Bytes != 7 {
		t.Errorf("stats %+v", stats)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil || st.Mode&0o7777 != 0o1777 || st.Uid != 5 || st.Gid != 6 {
		t.Errorf("root: mode %o uid %d gid %d (%v)", st.Mode&0o7777, st.Uid, st.Gid, err)
	}
	if err := unix.Stat(filepath.Join(dir, "deep"), &st); err != nil || st.Mode&0o7777 != 0o755 || st.Uid != 7 {
		t.Errorf("deep: mode %o uid %d (%v)", st.Mode&0o7777, st.Uid, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "deep/er/file")); err != nil || string(b) != "content" {
		t.Errorf("deep/er/file: %q %v", b, err)
	}
}

func TestWriteSkipsSpecialFiles(t *testing.T) {
	src := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	stats, err := writeTar(t, src, &buf)
	if err != nil || stats.Skipped != 1 || stats.Entries != 2 {
		t.Fatalf("write: %+v %v", stats, err)
	}
	dst := t.TempDir()
	if _, err := readTar(t, dst, &buf, archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(dst); len(names) != 1 || names[0].Name() != "f" {
		t.Errorf("read %v", names)
	}
}

// TestReadSparseKeepsHoles reads a PAX-sparse tar of a few KiB whose file is
// 1 GiB long with 4 KiB of data: the file gets its logical size and its
// data, and the holes stay holes instead of a gibibyte of zeros on disk.
func TestReadSparseKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	const logical, at = 1 << 30, 512 << 20
	chunk := bytes.Repeat([]byte("data"), 1024)
	data := archivetest.SparseTar(t, "big", logical, at, chunk)
	if len(data) > 10<<10 {
		t.Fatalf("the sparse tar takes %d bytes", len(data))
	}
	if _, err := readTar(t, dir, bytes.NewReader(data), archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "big"))
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
	if _, err := readTar(t, t.TempDir(), bytes.NewReader(data), archive.Limits{MaxBytes: logical - 1}); !errors.Is(err, archive.ErrRefused) || !strings.Contains(err.Error(), `"big": more than`) {
		t.Errorf("read of a file longer than MaxBytes: %v, want ErrRefused naming \"big\"", err)
	}
}

// TestReadKeepsFileCapabilities reads a file owned by another user that
// carries a security.capability xattr, as ping or an image's server binary
// does: the kernel drops that xattr on chown, so it must be set after the
// owner, or the file silently loses its capabilities.
func TestReadKeepsFileCapabilities(t *testing.T) {
	testutil.RequireRoot(t, "needs root to chown and set security.* xattrs")
	dir := t.TempDir()
	// VFS_CAP_REVISION_2 with the effective flag, CAP_NET_BIND_SERVICE (10)
	// permitted: magic, then permitted and inheritable of two 32-bit words.
	capability := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	e := archivetest.File("ping", "elf")
	e.Hdr.Uid, e.Hdr.Gid, e.Hdr.Mode = 1000, 1000, 0o755
	e.Hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(capability)}
	if _, err := readTar(t, dir, bytes.NewReader(archivetest.Tar(t, e)), archive.Limits{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ping")
	buf := make([]byte, 64)
	n, err := unix.Getxattr(p, "security.capability", buf)
	if err != nil {
		t.Fatalf("the file read lost its capabilities: %v", err)
	}
	if !bytes.Equal(buf[:n], capability) {
		t.Fatalf("security.capability = %x, want %x", buf[:n], capability)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Uid != 1000 {
		t.Fatalf("owner %d (%v), want 1000", st.Uid, err)
	}
}
