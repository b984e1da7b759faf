package ociartifact

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// FetchImage reads the manifest of an ordinary container image at ref,
// choosing linux on this machine's architecture from an index. Its layers
// are read by WriteImagePath; the client verifies each blob's digest.
func FetchImage(ctx context.Context, ref string, o RemoteOptions) (v1.Image, error) {
	r, err := o.parseRef(ref)
	if err != nil {
		return nil, err
	}
	opts, err := o.remote(ctx, nil)
	if err != nil {
		return nil, err
	}
	opts = append(opts, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	img, err := remote.Image(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("pulling %q: %w", ref, err)
	}
	return o.Cache.wrap(img), nil
}

// WriteImagePath writes to w, as one tar, what the image's file system
// holds at the absolute directory dir, the layers flattened with their
// whiteouts applied, named relative to dir ("." for dir itself). A hard
// link to a file outside dir is dropped with its target; one that comes
// before its target (in an upper layer) is written at the end. Reading stops with
// ErrArtifact past maxRead uncompressed bytes of the whole image (0: no
// bound), counted as the layers are uncompressed, what the flattening
// throws away (hidden, whited-out files) too, so that an image cannot make
// the node expand without end what it then mostly throws away; layers
// declared larger than that are refused before any download. The tar is
// untrusted: the store's Import applies its rules to it.
//
// It stays one function around one loop over the flattened tar: the files
// written so far and the hard links waiting for their targets are state the
// loop and the end share, and the loop's steps are short.
func WriteImagePath(img v1.Image, dir string, maxRead int64, w io.Writer) error {
	if maxRead > 0 {
		// Counted at the source: what the flattening reads and throws
		// away (files hidden by upper layers) costs as much as what it
		// keeps. Layers declared larger than that are not downloaded.
		if err := checkLayerSizes(img, maxRead); err != nil {
			return err
		}
		img = &boundedImage{Image: img, left: maxRead, limit: maxRead}
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	prefix := strings.TrimPrefix(path.Clean(dir), "/")
	tr := tar.NewReader(rc)
	tw := tar.NewWriter(w)
	found := false
	// The flattened tar comes upper layer first, so a hard link may come
	// before its target, which Import refuses: such links wait for the end.
	written := map[string]bool{}
	var links []*tar.Header
	var linkBytes int
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// mutate.Extract ends its tar before it reports a failure
			// (a bound, a blob's digest): that comes after the end.
			_, err = io.Copy(io.Discard, rc)
		}
		if err != nil {
			return fmt.Errorf("flattening the image's layers: %w", err)
		}
		if hdr == nil {
			break
		}
		rel, ok := under(prefix, hdr.Name)
		if !ok {
			continue
		}
		if rel == "." && hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: %s is not a directory in the image", ErrArtifact, dir)
		}
		// Some builders leave parent directories implicit: an entry
		// below dir shows it is there as well.
		found = true
		if hdr.Typeflag == tar.TypeLink {
			target, ok := under(prefix, hdr.Linkname)
			if !ok || target == "." {
				continue
			}
			hdr.Linkname = target
			if !written[target] {
				hdr.Name = rel
				// They wait in memory: bounded, whatever maxRead is.
				if linkBytes += len(rel) + len(target) + 512; linkBytes > maxPendingLinkBytes {
					return fmt.Errorf("%w: more than %d bytes of hard links before their targets", ErrArtifact, maxPendingLinkBytes)
				}
				links = append(links, hdr)
				continue
			}
		}
		if hdr.Typeflag == tar.TypeReg {
			written[rel] = true
		}
		hdr.Name = rel
		if hdr.Typeflag == tar.TypeDir && rel != "." {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%w: entry %q: %w", ErrArtifact, hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	if !found {
		return fmt.Errorf("%w: the image has no directory %s", ErrArtifact, dir)
	}
	for _, hdr := range links {
		if !written[hdr.Linkname] {
			continue // its target is whited out or no regular file
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%w: entry %q: %w", ErrArtifact, hdr.Name, err)
		}
	}
	return tw.Close()
}

// under returns name, an entry of the image, relative to the directory
// prefix (relative to the image's root), and whether it is in it.
func under(prefix, name string) (string, bool) {
	clean := strings.TrimPrefix(path.Clean("/"+name), "/")
	if clean == prefix {
		return ".", true
	}
	if prefix == "" {
		return clean, clean != ""
	}
	rel, ok := strings.CutPrefix(clean, prefix+"/")
	return rel, ok
}

// maxPendingLinkBytes bounds the memory the hard links that come before
// their targets hold until the end (some hundred bytes each).
const maxPendingLinkBytes = 64 << 20

// checkLayerSizes refuses an image whose layers are declared larger in all
// than a gzip of max bytes: each would be downloaded whole, then expand
// past max anyway.
func checkLayerSizes(img v1.Image, max int64) error {
	m, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("the image's manifest: %w", err)
	}
	var total int64
	for i, l := range m.Layers {
		if l.Size < 0 || l.Size > gzipBound(max) {
			return fmt.Errorf("%w: layer %d of %d compressed bytes, more than the %d bytes the pull may read", ErrArtifact, i, l.Size, max)
		}
		if total += l.Size; total > gzipBound(max) {
			return fmt.Errorf("%w: layers of more than %d compressed bytes, more than the %d bytes the pull may read", ErrArtifact, total, max)
		}
	}
	return nil
}

// boundedImage is an image whose layers, uncompressed, fail once they have
// given left bytes in all. mutate.Extract reads them one at a time.
type boundedImage struct {
	v1.Image
	left, limit int64
}

func (b *boundedImage) Layers() ([]v1.Layer, error) {
	ls, err := b.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = boundedLayer{Layer: l, img: b}
	}
	return out, nil
}

type boundedLayer struct {
	v1.Layer
	img *boundedImage
}

func (l boundedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	return boundedReadCloser{ReadCloser: rc, img: l.img}, nil
}

type boundedReadCloser struct {
	io.ReadCloser
	img *boundedImage
}

func (r boundedReadCloser) Read(p []byte) (int, error) {
	b := r.img
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := r.ReadCloser.Read(p)
	if int64(n) > b.left {
		return 0, fmt.Errorf("%w: the image's layers expand past %d bytes", ErrArtifact, b.limit)
	}
	b.left -= int64(n)
	return n, err
}
