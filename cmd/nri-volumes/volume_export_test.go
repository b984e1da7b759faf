package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
)

func TestVolumeExportImport(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "src")
	src := filepath.Join(root, "volumes", "default", "src", "_data")
	if err := os.MkdirAll(filepath.Join(src, "a", "b"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a", "b", "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(src, "a", "link")); err != nil {
		t.Fatal(err)
	}
	want := fstree.Snapshot(t, src)

	file := filepath.Join(t.TempDir(), "src.tar")
	if r := mustCLI(t, root, "export", "src", "-o", file); r.stdout != "" || r.stderr != "" {
		t.Errorf("export -o printed %+v", r)
	}
	mustCLI(t, root, "create", "-n", "shop", "copy")
	mustCLI(t, root, "import", "-n", "shop", "copy", file)
	fstree.Same(t, "import from a file", want, fstree.Snapshot(t, filepath.Join(root, "volumes", "shop", "copy", "_data")))

	r := mustCLI(t, root, "export", "src")
	mustCLI(t, root, "create", "piped")
	if r := runCLI(t, root, r.stdout, "import", "piped", "-"); r.code != 0 {
		t.Fatalf("import -: %+v", r)
	}
	fstree.Same(t, "import from stdin", want, fstree.Snapshot(t, filepath.Join(root, "volumes", "default", "piped", "_data")))

	if r := runCLI(t, root, "", "import", "piped", file); r.code != 1 || !strings.Contains(r.stderr, "empty volume") {
		t.Errorf("import into a filled volume: %+v", r)
	}
	if r := runCLI(t, root, "", "export", "nope"); r.code != 1 || !strings.Contains(r.stderr, "not found") || r.stdout != "" {
		t.Errorf("export of a missing volume: %+v", r)
	}
	if r := runCLI(t, root, "", "import", "piped"); r.code != 2 {
		t.Errorf("import without a file: %+v", r)
	}
}

func TestVolumeImportRefusesHostileTar(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "v")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "ok", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2},
		{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte("hi"))
	}
	tw.Close()
	r := runCLI(t, root, buf.String(), "import", "v", "-")
	if r.code != 1 || !strings.Contains(r.stderr, `entry "../escape"`) {
		t.Errorf("hostile tar: %+v", r)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "volumes", "default", "v", "_data")); len(entries) != 0 {
		t.Errorf("volume not left empty: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(root, "volumes", "default", "v", "escape")); !os.IsNotExist(err) {
		t.Errorf("wrote outside _data: %v", err)
	}
	if r := runCLI(t, root, strings.Repeat("x", 600), "import", "v", "-", "--max-files", "1"); r.code != 1 || !strings.Contains(r.stderr, "refused archive") {
		t.Errorf("garbage: %+v", r)
	}
	buf.Reset()
	tw = tar.NewWriter(&buf)
	for _, n := range []string{"a", "b"} {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644})
	}
	tw.Close()
	if r := runCLI(t, root, buf.String(), "import", "v", "-", "--max-files", "1"); r.code != 1 || !strings.Contains(r.stderr, `"b": more than 1 entries`) {
		t.Errorf("--max-files: %+v", r)
	}
}
