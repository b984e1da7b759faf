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
// bound), so that an image cannot make the node expand without end what it
// then mostly throws away. The tar is untrusted: the store's Import applies
// its rules to it.
func WriteImagePath(img v1.Image, dir string, maxRead int64, w io.Writer) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	var r io.Reader = rc
	if maxRead > 0 {
		r = &limitReader{r: rc, left: maxRead, limit: maxRead}
	}
	prefix := strings.TrimPrefix(path.Clean(dir), "/")
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	found := false
	// The flattened tar comes upper layer first, so a hard link may come
	// before its target, which Import refuses: such links wait for the end.
	written := map[string]bool{}
	var links []*tar.Header
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("flattening the image's layers: %w", err)
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

// limitReader fails past left bytes.
type limitReader struct {
	r           io.Reader
	left, limit int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		return 0, fmt.Errorf("%w: the image's layers expand past %d bytes", ErrArtifact, l.limit)
	}
	l.left -= int64(n)
	return n, err
}
