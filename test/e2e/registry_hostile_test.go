package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/ociartifact"
	"github.com/nri-volumes/nri-volumes/test/harness"
)

// pushTar pushes the tar of entries to ref as a volume artifact, then lets
// edit change its config before it is sealed and pushed.
func pushTar(t *testing.T, reg *harness.Registry, ref string, entries []tarEntry, edit func(*ociartifact.Artifact)) *ociartifact.Artifact {
	t.Helper()
	meta := ociartifact.Meta{Volume: "hostile", Namespace: "default"}
	art, err := ociartifact.Build(bytes.NewReader(tarOf(t, entries)), t.TempDir(), meta, ociartifact.DefaultSplit)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(art)
		if err := art.Seal(meta); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := art.Push(context.Background(), ref, ociartifact.RemoteOptions{AuthFile: reg.AuthFile, CAFile: reg.CAFile}); err != nil {
		t.Fatal(err)
	}
	return art
}

// tarEntry is one entry of a tar that tarOf writes: its header as given,
// then data.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

// tarOf writes entries into a tar and returns it.
func tarOf(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func dir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}
func file(name, data string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, data: []byte(data)}
}

// TestVolumePullRefusesHostileArtifacts pulls artifacts that try to write
// outside the volume, lie about their digests or sizes, or expand past the
// limits: each is refused with a message that says why, and nothing is
// left: no volume, nothing outside the store.
func TestVolumePullRefusesHostileArtifacts(t *testing.T) {
	bin := cliBin(t)
	reg := harness.StartRegistry(t)
	b := newNode(t, bin, reg)
	outside := t.TempDir()

	zeros := make([]byte, 32<<20)
	tests := []struct {
		name    string
		entries []tarEntry
		edit    func(*ociartifact.Artifact)
		corrupt bool     // change the stored layer where gzip does not look
		args    []string // extra pull flags
		want    string
	}{
		{name: "dotdot", entries: []tarEntry{dir("./"), file("ok", "x"), file("../escape", "x")}, want: `entry "../escape": has a .. component`},
		{name: "absolute", entries: []tarEntry{dir("./"), file(outside+"/abs", "x")}, want: "not a relative path"},
		{name: "symlink-out", entries: []tarEntry{dir("./"),
			{hdr: tar.Header{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777}},
			file("out/planted", "x")}, want: "beneath a symlink"},
		{name: "hardlink-out", entries: []tarEntry{dir("./"),
			{hdr: tar.Header{Name: "passwd", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}}, want: "hard link"},
		{name: "device", entries: []tarEntry{dir("./"),
			{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}}}, want: "device nodes"},
		{name: "diffid", entries: []tarEntry{dir("./"), file("a", "data")}, edit: func(a *ociartifact.Artifact) {
			a.Config.Layers[0].DiffID = "sha256:" + strings.Repeat("0", 64)
		}, want: "uncompressed digest"},
		{name: "digest", entries: []tarEntry{dir("./"), file("a", strings.Repeat("data", 1000))}, corrupt: true, want: "error verifying sha256 checksum"},
		{name: "bomb-declared", entries: []tarEntry{dir("./"), {hdr: tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(zeros))}, data: zeros}},
			args: []string{"--max-bytes", "1048576"}, want: "more than the 1048576 allowed"},
		{name: "bomb-undeclared", entries: []tarEntry{dir("./"), {hdr: tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(zeros))}, data: zeros}},
			edit: func(a *ociartifact.Artifact) {
				l := &a.Config.Layers[len(a.Config.Layers)-1]
				// A tar size its gzip fits in, far below what it expands
				// to: refused while it streams. (Declared smaller than its
				// gzip, it is refused before the download.)
				l.Bytes, l.TarSize, a.Config.Bytes = 10, 1<<20, 10
			}, want: "expands past"},
		{name: "bomb-lying-tar-size", entries: []tarEntry{dir("./"), {hdr: tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(zeros))}, data: zeros}},
			edit: func(a *ociartifact.Artifact) {
				l := &a.Config.Layers[len(a.Config.Layers)-1]
				l.Bytes, l.TarSize, a.Config.Bytes = 10, 4096, 10
			}, want: "more than a gzip of its 4096-byte tar takes"},
		{name: "bomb-undeclared-limit", entries: []tarEntry{dir("./"), {hdr: tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(zeros))}, data: zeros}},
			edit: func(a *ociartifact.Artifact) {
				a.Config.Layers[len(a.Config.Layers)-1].Bytes, a.Config.Bytes = 10, 10
			}, args: []string{"--max-bytes", "1048576"}, want: "more than 1048576 bytes"},
		{name: "not-ours", entries: []tarEntry{dir("./")}, edit: func(a *ociartifact.Artifact) {
			a.Config.Layers = nil
		}, want: "config describes 0 layers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref := reg.Host + "/hostile/" + tc.name + ":1"
			art := pushTar(t, reg, ref, tc.entries, tc.edit)
			if tc.corrupt {
				p := reg.BlobPath(art.Layers[0].Digest)
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				// The gzip header's MTIME: the data decompresses the
				// same, only the blob's digest can tell.
				data[4] ^= 0xff
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, stderr, err := b.try(append([]string{"pull", ref, "v"}, tc.args...)...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("pull: %v, stderr %q; want a refusal with %q", err, stderr, tc.want)
			}
			t.Logf("refused: %s", stderr)
			if out := b.must("ls", "-q"); out != "" {
				t.Errorf("volumes left after the refusal: %q", out)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("written outside the store: %v", entries)
			}
			if entries, _ := os.ReadDir(filepath.Join(b.root, "volumes", "default")); len(entries) != 0 {
				t.Errorf("left in the store: %v", entries)
			}
		})
	}

	// Into an existing empty volume: refused the same, the volume stays,
	// empty.
	b.must("create", "kept")
	ref := reg.Host + "/hostile/dotdot:1"
	if _, stderr, err := b.try("pull", ref, "kept"); err == nil || !strings.Contains(stderr, "..") {
		t.Errorf("pull into an existing volume: %v %q", err, stderr)
	}
	if entries, err := os.ReadDir(b.data("kept")); err != nil || len(entries) != 0 {
		t.Errorf("existing volume after a refused pull: %v %v", entries, err)
	}

	// Content larger than the volume's size: refused before any layer is
	// read, even with no other limit.
	b.must("create", "--opt", "size=8Mi", "small")
	ref = reg.Host + "/hostile/bomb-declared:1"
	if _, stderr, err := b.try("pull", ref, "small", "--max-bytes", "0"); err == nil || !strings.Contains(stderr, "more than the 8388608 allowed") {
		t.Errorf("pull of 32 MiB into an 8 MiB volume: %v %q", err, stderr)
	}
	if entries, err := os.ReadDir(b.data("small")); err != nil || len(entries) != 0 && !(len(entries) == 1 && entries[0].Name() == "lost+found") {
		t.Errorf("sized volume after a refused pull: %v %v", entries, err)
	}
	b.must("rm", "small", "kept")
}
