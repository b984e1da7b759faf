package ociartifact

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"slices"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func imageOf(t *testing.T, layers ...[]*tar.Header) v1.Image {
	t.Helper()
	img := empty.Image
	for _, hdrs := range layers {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range hdrs {
			body := strings.Repeat("x", int(h.Size))
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			tw.Write([]byte(body))
		}
		tw.Close()
		data := b.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func reg(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}
}

// names lists the entries of the tar b, sorted, and checks that every hard
// link comes after its target, as Import needs.
func names(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			sort.Strings(out)
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		s := h.Name
		if h.Typeflag == tar.TypeLink {
			if !slices.Contains(out, h.Linkname) {
				t.Errorf("hard link %s comes before its target %s", h.Name, h.Linkname)
			}
			s += "=>" + h.Linkname
		}
		out = append(out, s)
	}
}

// The directory of the flattened image, renamed relative to it: whiteouts
// and opaque directories applied, implicit parents accepted, a hard link to
// a file outside dropped, a file or a missing path refused, the reading
// bounded.
func TestWriteImagePath(t *testing.T) {
	img := imageOf(t,
		[]*tar.Header{reg("srv/data/a", 1), reg("srv/data/gone", 1), reg("srv/data/old/x", 1), reg("etc/shadow", 1),
			{Name: "srv/data/link", Typeflag: tar.TypeLink, Linkname: "etc/shadow"}},
		[]*tar.Header{reg("srv/data/.wh.gone", 0), reg("srv/data/old/.wh..wh..opq", 0), reg("srv/data/old/y", 1),
			{Name: "srv/data/hard", Typeflag: tar.TypeLink, Linkname: "srv/data/a"}})
	var b bytes.Buffer
	if err := WriteImagePath(img, "/srv/data/", 0, &b); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(t, b.Bytes()), " "); got != "a hard=>a old/y" {
		t.Errorf("entries: %s", got)
	}
	for _, c := range []struct{ dir, want string }{
		{"/etc/shadow", "not a directory"},
		{"/nothere", "no directory /nothere"},
	} {
		if err := WriteImagePath(img, c.dir, 0, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("WriteImagePath(%s) = %v, want %q", c.dir, err, c.want)
		}
	}
	big := imageOf(t, []*tar.Header{reg("other/blob", 1<<20), reg("srv/data/a", 1)})
	if err := WriteImagePath(big, "/srv/data", 64<<10, io.Discard); !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), "expand past") {
		t.Errorf("an image past the read bound: %v", err)
	}
}

// The reviewer's case: a 64 MiB file of a lower layer, whited out by the
// upper one, costs its reading; a bound of 1 MiB refuses it.
func TestWriteImagePathCountsWhatItDiscards(t *testing.T) {
	img := imageOf(t,
		[]*tar.Header{reg("srv/data/a", 1), reg("srv/data/hidden", 64<<20)},
		[]*tar.Header{reg("srv/data/.wh.hidden", 0)})
	if err := WriteImagePath(img, "/srv/data", 1<<20, io.Discard); !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), "expand past") {
		t.Errorf("an image hiding 64 MiB, read with a bound of 1 MiB: %v", err)
	}
	shadowed := imageOf(t,
		[]*tar.Header{reg("srv/data/a", 64<<20)},
		[]*tar.Header{reg("srv/data/a", 1)})
	if err := WriteImagePath(shadowed, "/srv/data", 1<<20, io.Discard); !errors.Is(err, ErrArtifact) {
		t.Errorf("an image shadowing 64 MiB, read with a bound of 1 MiB: %v", err)
	}
}
