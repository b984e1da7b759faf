package volumes

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/volumes/internal/archive/archivetest"
)

func TestExportImportRoundTrip(t *testing.T) {
	s := newTestStore(t)
	src, err := s.Create("default", "src", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	archivetest.FillTree(t, src.Mountpoint)
	want := archivetest.Describe(t, src.Mountpoint)

	var buf bytes.Buffer
	stats, err := s.Export("default", "src", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Entries != int64(len(want)) || stats.Skipped != 0 {
		t.Errorf("export stats %+v, want %d entries", stats, len(want))
	}
	if after := archivetest.Describe(t, src.Mountpoint); !equalMaps(want, after) {
		t.Errorf("export changed the source")
	}
	dst, err := s.Create("shop", "dst", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("shop", "dst", bytes.NewReader(buf.Bytes()), ArchiveLimits{MaxFiles: 100, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	fstree.Same(t, "round trip", want, archivetest.Describe(t, dst.Mountpoint))
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

// tarOf and file build tars for the store's tests, as archivetest does.
func tarOf(t *testing.T, entries ...archivetest.Entry) []byte {
	t.Helper()
	return archivetest.Tar(t, entries...)
}

func file(name, body string) archivetest.Entry { return archivetest.File(name, body) }

func TestImportRefusesHostileTars(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range archivetest.HostileTars(t, outside) {
		t.Run(tt.Name, func(t *testing.T) {
			s := newTestStore(t)
			v, err := s.Create("default", "v", CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(v.Mountpoint, 0o711); err != nil {
				t.Fatal(err)
			}
			beforeData := archivetest.Describe(t, v.Mountpoint)
			beforeOutside := fstree.Snapshot(t, outside)
			_, err = s.Import("default", "v", bytes.NewReader(tt.Tar), tt.Limits)
			if !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), tt.WantErr) {
				t.Fatalf("import: %v, want ErrArchive naming %s", err, tt.WantErr)
			}
			if !strings.Contains(err.Error(), `volume "v"`) {
				t.Errorf("error does not name the volume: %v", err)
			}
			if after := archivetest.Describe(t, v.Mountpoint); !equalMaps(beforeData, after) {
				t.Errorf("volume not left as it was:\nbefore %v\nafter  %v", beforeData, after)
			}
			fstree.Same(t, "outside", beforeOutside, fstree.Snapshot(t, outside))
		})
	}
}

func TestImportIntoMissingVolume(t *testing.T) {
	s := newTestStore(t)
	if _, err := s.Import("default", "missing", bytes.NewReader(tarOf(t, file("a", "a"))), ArchiveLimits{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("import into a missing volume: %v", err)
	}
}

func newTestStore(t *testing.T) *Store {
	t.Helper()
	s, _ := newStore(t)
	return s
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
