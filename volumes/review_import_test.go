package volumes

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReviewFailedImportKeepsContainerData: volume import fills _data in
// place (no staging, no in-use check) and on a bad entry empties _data
// whole. A container using the volume that wrote a file meanwhile loses it:
// CopyUp stages exactly to avoid this ("data that another container wrote
// into a shared volume meanwhile stays"). Import must refuse a volume in use
// or stage as CopyUp does.
func TestReviewFailedImportKeepsContainerData(t *testing.T) {
	s, _ := newStore(t)
	vols, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "data"}})
	if err != nil {
		t.Fatal(err)
	}
	data := vols[0].Mountpoint
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Import("default", "data", pr, ArchiveLimits{})
		done <- err
	}()
	tw := tar.NewWriter(pw)
	tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
	tw.Write([]byte("a"))
	tw.Flush()
	// Import has begun writing; the running container c1 writes its own file.
	for {
		if _, err := os.Stat(filepath.Join(data, "a")); err == nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(data, "mine"), []byte("container data"), 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		tw.WriteHeader(&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Mode: 0o644})
		tw.Close()
		pw.Close()
	}()
	err = <-done
	pr.Close()
	t.Logf("import: %v", err)
	if err == nil {
		t.Fatal("import of a tar with a device node succeeded")
	}
	if _, serr := os.Stat(filepath.Join(data, "mine")); serr != nil {
		t.Errorf("the failed import of volume data (used by c1) deleted the container's own file: %v", serr)
	}
}
