package archive_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/volumes/internal/archive"
	"github.com/nri-volumes/nri-volumes/volumes/internal/archive/archivetest"
)

// FuzzRead feeds arbitrary bytes to Read as a tar and checks that, whether
// it refuses them or not, it touches nothing beside the directory it fills:
// neither a sibling directory nor the parent they share.
func FuzzRead(f *testing.F) {
	// Small seeds only: the fuzzer minimizes every input that finds new
	// code, which takes long for a large one when each run writes files.
	for _, h := range archivetest.HostileTars(f, f.TempDir()) {
		if len(h.Tar) <= 8<<10 {
			f.Add(h.Tar)
		}
	}
	f.Add(archivetest.SparseTar(f, "big", 1<<20, 4096, []byte("data")))
	f.Add(archivetest.Tar(f,
		archivetest.Entry{Hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		archivetest.Entry{Hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o1777, Uid: 5,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": "y"}}},
		archivetest.File("d/f", "content"),
		archivetest.Entry{Hdr: tar.Header{Name: "d/h", Typeflag: tar.TypeLink, Linkname: "d/f"}},
		archivetest.Entry{Hdr: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "../d"}},
	))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		outside := filepath.Join(parent, "outside")
		dir := filepath.Join(parent, "dir")
		for _, d := range []string{outside, dir} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := fstree.Snapshot(t, outside)
		// Bounded, so that a tar that claims a huge file stays cheap.
		readTar(t, dir, bytes.NewReader(data), archive.Limits{MaxFiles: 1000, MaxBytes: 4 << 20})
		fstree.Same(t, "outside", before, fstree.Snapshot(t, outside))
		if names, err := os.ReadDir(parent); err != nil || len(names) != 2 {
			t.Fatalf("the parent holds %v (%v), want only dir and outside", names, err)
		}
	})
}
