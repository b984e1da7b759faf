package ociartifact

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var testSplit = SplitOptions{MinLayer: 32 << 10, MaxLayer: 128 << 10, BigFile: 64 << 10, BoundaryOneIn: 16}

// tree is a volume's content as name -> data, written as a sorted tar.
type tree struct {
	names []string
	data  map[string][]byte
}

func newTree(files, size int) *tree {
	tr := &tree{data: map[string][]byte{}}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range files {
		name := fmt.Sprintf("d%02d/f%05d", i/100, i)
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		tr.names = append(tr.names, name)
		tr.data[name] = b
	}
	return tr
}

func (tr *tree) tar(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 123456789)
	hdr := func(h *tar.Header) {
		h.ModTime, h.AccessTime, h.Format = mtime, time.Now(), tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	hdr(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	dir := ""
	for _, n := range tr.names {
		if d := n[:3]; d != dir {
			dir = d
			hdr(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o750, Uname: "who"})
		}
		hdr(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o640, Size: int64(len(tr.data[n])), Uid: 7,
			PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}})
		tw.Write(tr.data[n])
	}
	tw.Close()
	return &buf
}

func build(t *testing.T, tr *tree) *Artifact {
	t.Helper()
	a, err := Build(tr.tar(t), t.TempDir(), Meta{Volume: "v", Namespace: "default"}, testSplit)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// changed counts the layers of b, and their bytes, that a does not have:
// what a push of b after a uploads.
func changed(a, b *Artifact) (n int, bytes, total int64) {
	have := map[string]bool{}
	for _, l := range a.Layers {
		have[l.Digest] = true
	}
	for _, l := range b.Layers {
		total += l.Size
		if !have[l.Digest] {
			n++
			bytes += l.Size
		}
	}
	return n, bytes, total
}

func TestBuildIsDeterministicAndIncremental(t *testing.T) {
	tr := newTree(1000, 1000) // about 1.5 MB of tar, some 30 layers
	a := build(t, tr)
	if len(a.Layers) < 10 {
		t.Fatalf("only %d layers", len(a.Layers))
	}
	again := build(t, tr) // access times differ: they are not kept
	if n, _, _ := changed(a, again); n != 0 || !bytes.Equal(a.Manifest, again.Manifest) {
		t.Fatalf("same data built again: %d layers differ", n)
	}

	tests := []struct {
		name   string
		change func(*tree)
	}{
		{"one file rewritten", func(tr *tree) { tr.data[tr.names[734]][10] ^= 0xff }},
		{"one file grown", func(tr *tree) { tr.data[tr.names[500]] = append(tr.data[tr.names[500]], make([]byte, 1500)...) }},
		{"one file added", func(tr *tree) {
			n := "d07/f00700a"
			tr.data[n] = []byte("new")
			i := 701
			tr.names = append(tr.names[:i], append([]string{n}, tr.names[i:]...)...)
		}},
		{"one file removed", func(tr *tree) { delete(tr.data, tr.names[42]); tr.names = append(tr.names[:42], tr.names[43:]...) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTree(1000, 1000)
			tc.change(tr)
			b := build(t, tr)
			n, bytes, total := changed(a, b)
			t.Logf("%d of %d layers new, %d of %d bytes", n, len(b.Layers), bytes, total)
			if n == 0 || n > 2 || bytes*10 > total {
				t.Errorf("%d of %d layers (%d of %d bytes) would be uploaded", n, len(b.Layers), bytes, total)
			}
		})
	}
}

func TestBuildPutsBigFilesAlone(t *testing.T) {
	tr := newTree(3, 1000)
	tr.data[tr.names[1]] = make([]byte, testSplit.BigFile)
	a := build(t, tr)
	if len(a.Layers) != 3 || a.Layers[1].Info.Entries != 1 || a.Layers[1].Info.Bytes != testSplit.BigFile {
		t.Errorf("layers %+v: want the big file alone in the second", a.Config.Layers)
	}
	if a.Config.Bytes != testSplit.BigFile+2000 || a.Config.Entries != 5 || a.Config.Mode != "0755" {
		t.Errorf("config %+v", a.Config)
	}
}
