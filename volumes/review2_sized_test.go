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
	vols, err := s.Acquire("ctr1", []Request{{Namespace: "default", Name: "v"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(vols[0].Mountpoint, "f"))
	if err != nil || string(got) != "imported" {
		t.Errorf("a container sees f = %q, %v; the import went under the mount point", got, err)
	}
}
