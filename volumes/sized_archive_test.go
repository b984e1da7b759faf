package volumes

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestSizedImportWhileInactive imports into a sized volume no container
// uses, as `volume import` does, then has a container use it: the imported
// data must be what the container sees, inside the volume's size, not in a
// directory on the host's file system that the volume's own file system
// then hides. Export of the same inactive volume must give that data back.
func TestSizedImportWhileInactive(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	if _, err := s.Create("default", "v", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("imported")
	if err := tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	tw.Close()
	if _, err := s.Import("default", "v", &buf, ArchiveLimits{}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if st, err := s.Export("default", "v", &out); err != nil || st.Bytes == 0 {
		t.Errorf("Export of the inactive volume after import: %+v, %v; want the imported file", st, err)
	}
	vols, _, err := s.Acquire("ctr1", []Request{{Namespace: "default", Name: "v"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(vols[0].Mountpoint, "f"))
	if err != nil || string(got) != "imported" {
		t.Errorf("a container sees f = %q, %v; the import went under the mount point", got, err)
	}
}

// TestSizedExportWhileInactive writes through a container, lets it go (the
// volume's file system comes down), then exports, as a backup would: the
// archive must hold the file, not the empty mount point beneath.
func TestSizedExportWhileInactive(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	if _, err := s.Create("default", "v", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("ctr1", []Request{{Namespace: "default", Name: "v"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, "f"), []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("ctr1"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := s.Export("default", "v", &out); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&out)
	found := false
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		found = found || hdr.Name == "f" || hdr.Name == "./f"
	}
	if !found {
		t.Error("Export of a sized volume no container uses left out its data")
	}
}
