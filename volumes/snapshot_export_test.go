package volumes

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tarFiles reads the regular files of a tar into a map by name.
func tarFiles(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = b
		}
	}
}

// recordsIn checks that data holds records 0, 1, 2, ... whole and in order,
// and returns how many.
func recordsIn(t *testing.T, what string, data []byte) int {
	t.Helper()
	if len(data)%recordSize != 0 {
		t.Fatalf("%s: %d bytes, a torn record at the end", what, len(data))
	}
	for i := 0; i < len(data); i += recordSize {
		if !bytes.Equal(data[i:i+recordSize], testRecord(uint64(i/recordSize))) {
			t.Fatalf("%s: record %d is not the one written", what, i/recordSize)
		}
	}
	return len(data) / recordSize
}

// TestExportImageInUseIsPointInTime exports a sized volume while a writer
// appends each record to a.log, then to b.log, with an fsync after each,
// and a large file between them in the tar's order. A tar read from one
// instant holds in b.log at most the records of a.log, and in a.log at
// most one more than in b.log; a tar read while the writer went on has
// b.log ahead. Each tar holds every record synced before it began, and
// the temporary snapshot it was read from is gone.
func TestExportImageInUseIsPointInTime(t *testing.T) {
	requireLoop(t)
	s := openSizedAt(t, t.TempDir())
	if _, err := s.Create("default", "db", CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("writer-ctr", []Request{{Namespace: "default", Name: "db"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mp := vols[0].Mountpoint
	if err := os.WriteFile(filepath.Join(mp, "a.mid"), bytes.Repeat([]byte("x"), 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, filepath.Join(mp, "a.log"), filepath.Join(mp, "b.log"))
	defer w.finish(t)
	for i := 0; i < 4; i++ {
		w.waitProgress(t, w.synced.Load())
		before := w.synced.Load()
		var buf bytes.Buffer
		stats, err := s.Export("default", "db", &buf)
		if err != nil {
			t.Fatal(err)
		}
		if !stats.Snapshot {
			t.Errorf("export %d of a sized volume in use did not read a snapshot", i)
		}
		files := tarFiles(t, buf.Bytes())
		a, b := recordsIn(t, "a.log", files["a.log"]), recordsIn(t, "b.log", files["b.log"])
		if b > a || a > b+1 {
			t.Errorf("export %d: a.log holds %d records, b.log %d: not one point in time", i, a, b)
		}
		if uint64(b) < before {
			t.Errorf("export %d: %d records, but %d were synced before it began", i, b, before)
		}
	}
	snaps, err := s.Snapshots().List("default", "db")
	if err != nil || len(snaps) != 0 {
		t.Errorf("snapshots after the exports: %v, %v; want none", snaps, err)
	}
	if names, _ := os.ReadDir(filepath.Join(s.dir, "default", "db", snapshotsDir)); len(names) != 0 {
		t.Errorf("the exports left %d entries in the snapshots directory", len(names))
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check: %v, %v", probs, err)
	}
}
