package harness

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
)

// readArchive returns the files of an image layout tar by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = data
	}
}

func TestImageBuild(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("no %s (install busybox-static): %v", BusyboxPath, err)
	}
	img := Image{
		Name:       "localhost/unit:test",
		Entrypoint: []string{"/bin/sleep", "1"},
		Volumes:    []string{"/data"},
		User:       "999",
		Files: []File{
			Directory("/data", 0o750, 999, 999),
			RegularFile("/data/deep/seed", "seed\n", 0o640, 999, 998),
			Symlink("/data/link", "deep/seed"),
			Directory("/tmp", 0o1777, 0, 0),
		},
	}
	built, err := img.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, built.Archive)

	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != img.Name {
		t.Fatalf("index.json = %s", files["index.json"])
	}
	for name, data := range files {
		if strings.HasPrefix(name, "blobs/sha256/") && "sha256:"+strings.TrimPrefix(name, "blobs/sha256/") != digest(data) {
			t.Errorf("blob %s does not match its digest", name)
		}
	}
	var cfg struct {
		Config struct {
			Volumes map[string]struct{}
			User    string
		}
	}
	if err := json.Unmarshal(files[blobPath(built.ConfigDigest)], &cfg); err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Config.Volumes["/data"]; !ok || cfg.Config.User != "999" {
		t.Errorf("config = %+v", cfg.Config)
	}

	var manifest struct{ Layers []struct{ Digest string } }
	if err := json.Unmarshal(files[blobPath(index.Manifests[0].Digest)], &manifest); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(strings.NewReader(string(files[blobPath(manifest.Layers[0].Digest)])))
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]*tar.Header{}
	var order []string
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		headers[name] = hdr
		order = append(order, name)
	}
	for _, tc := range []struct {
		path     string
		typ      byte
		mode     int64
		uid, gid int
	}{
		{"data", tar.TypeDir, 0o750, 999, 999},
		{"data/deep", tar.TypeDir, 0o755, 0, 0},
		{"data/deep/seed", tar.TypeReg, 0o640, 999, 998},
		{"data/link", tar.TypeSymlink, 0o777, 0, 0},
		{"tmp", tar.TypeDir, 0o1777, 0, 0},
		{"bin/busybox", tar.TypeReg, 0o755, 0, 0},
		{"bin/sh", tar.TypeSymlink, 0o777, 0, 0},
	} {
		h := headers[tc.path]
		if h == nil {
			t.Errorf("layer lacks %s", tc.path)
			continue
		}
		if h.Typeflag != tc.typ || h.Mode != tc.mode || h.Uid != tc.uid || h.Gid != tc.gid {
			t.Errorf("%s: type %c mode %o owner %d:%d, want type %c mode %o owner %d:%d",
				tc.path, h.Typeflag, h.Mode, h.Uid, h.Gid, tc.typ, tc.mode, tc.uid, tc.gid)
		}
	}
	seen := map[string]bool{}
	for _, name := range order {
		if dir := parentDir(name); dir != "" && !seen[dir] {
			t.Errorf("%s comes before its parent %s", name, dir)
		}
		seen[name] = true
	}
}

func parentDir(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return ""
}
