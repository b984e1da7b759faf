package ociartifact

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nri-volumes/nri-volumes/internal/labels"
)

// maxConfigSize bounds the config blob pull reads: it lists the layers,
// some hundred bytes each.
const maxConfigSize = 4 << 20

// Remote is an artifact in a registry whose manifest and config were read
// and checked; its layers are read by WriteTar.
type Remote struct {
	Ref         string
	Digest      string
	Config      Config
	Annotations map[string]string
	layers      []v1.Descriptor
	img         v1.Image
}

// Fetch reads the manifest and config of the artifact at ref and checks
// them: an OCI manifest with our config type, tar+gzip layers that the
// config describes one for one. The client verifies the config's digest.
func Fetch(ctx context.Context, ref string, o RemoteOptions) (*Remote, error) {
	r, err := o.parseRef(ref)
	if err != nil {
		return nil, err
	}
	opts, err := o.remote(ctx, nil)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("pulling %q: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("pulling %q: %w", ref, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %q: %s", ErrArtifact, ref, fmt.Sprintf(format, args...))
	}
	if m.MediaType != ManifestMediaType {
		return nil, bad("manifest type %q, not %q", m.MediaType, ManifestMediaType)
	}
	if m.Config.MediaType != ConfigMediaType {
		return nil, bad("config type %q is not a volume's (%q)", m.Config.MediaType, ConfigMediaType)
	}
	if m.Config.Size > maxConfigSize {
		return nil, bad("config of %d bytes, more than %d", m.Config.Size, maxConfigSize)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("pulling %q: config: %w", ref, err)
	}
	if got := descriptor(ConfigMediaType, raw).Digest; got != m.Config.Digest {
		return nil, bad("config digest %s, manifest says %s", got, m.Config.Digest)
	}
	conf, err := checkConfig(m, raw, o.MaxPullBytes, bad)
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	return &Remote{Ref: ref, Digest: d.String(), Config: conf, Annotations: m.Annotations, layers: m.Layers, img: o.Cache.wrap(img)}, nil
}

// checkConfig decodes the artifact's config, raw, and checks it against the
// manifest m before any layer is read: one description per layer, sizes a
// gzip of each layer's tar can have, totals that add up, and no more
// compressed bytes than maxPull allows (0: no bound).
func checkConfig(m *v1.Manifest, raw []byte, maxPull int64, bad func(format string, args ...any) error) (Config, error) {
	var conf Config
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&conf); err != nil {
		return Config{}, bad("config: %v", err)
	}
	if err := labels.Validate(conf.Labels); err != nil {
		return Config{}, bad("config: %v", err)
	}
	if conf.Limit < 0 {
		return Config{}, bad("config: negative limit %d", conf.Limit)
	}
	if len(conf.Layers) != len(m.Layers) || len(m.Layers) == 0 {
		return Config{}, bad("config describes %d layers, manifest has %d", len(conf.Layers), len(m.Layers))
	}
	var bytes, entries, compressed int64
	for i, l := range m.Layers {
		info := conf.Layers[i]
		if l.MediaType != LayerMediaType {
			return Config{}, bad("layer %d: type %q, not %q", i, l.MediaType, LayerMediaType)
		}
		if !digestRE.MatchString(info.DiffID) || info.TarSize < 0 || info.Bytes < 0 || info.Entries < 0 || info.Bytes > info.TarSize {
			return Config{}, bad("layer %d: bad description in the config", i)
		}
		// A blob is downloaded whole, to the size the manifest declares,
		// before its content is checked: a size that no gzip of the
		// layer's tar can have would fill the disk for nothing.
		if l.Size < 0 || l.Size > gzipBound(info.TarSize) {
			return Config{}, bad("layer %d: %d compressed bytes declared, more than a gzip of its %d-byte tar takes", i, l.Size, info.TarSize)
		}
		bytes += info.Bytes
		entries += info.Entries
		compressed += l.Size
	}
	if maxPull > 0 && compressed > gzipBound(maxPull) {
		return Config{}, bad("layers of %d compressed bytes, more than the %d bytes the pull may read", compressed, maxPull)
	}
	if bytes != conf.Bytes || entries != conf.Entries || bytes < 0 || entries < 0 {
		return Config{}, bad("config totals (%d bytes, %d entries) do not add up", conf.Bytes, conf.Entries)
	}
	return conf, nil
}

// WriteTar writes the artifact's layers to w as one tar, for the store's
// Import, which applies its rules for untrusted tars to it. Every layer is
// checked while it streams: its compressed digest (by the client, which
// fails the read at the end of a blob that does not match), its
// uncompressed digest and length against the config (reading stops at
// the length the config gives, so a small blob cannot expand without
// bound). A failure is an error from w's point of view too: a reader of
// an io.Pipe sees it, and Import then empties the volume again.
func (r *Remote) WriteTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	for i, desc := range r.layers {
		if err := r.copyLayer(tw, i, desc); err != nil {
			return err
		}
	}
	return tw.Close()
}

// Stream runs write (WriteTar, or WriteImagePath for one image) into a
// pipe that read, such as the store's Import, consumes, and returns the
// first error of the two. What read leaves after the end of its tar is
// drained: the end comes before write has checked the last layer's digest,
// which must still fail the whole. A read that fails stops write.
func Stream(write func(io.Writer) error, read func(io.Reader) error) error {
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err)
		written <- err
	}()
	err := read(pr)
	if err == nil {
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(io.ErrClosedPipe)
	if werr := <-written; werr != nil && err == nil {
		err = werr
	}
	return err
}

func (r *Remote) copyLayer(tw *tar.Writer, i int, desc v1.Descriptor) error {
	info := r.Config.Layers[i]
	fail := func(err error) error { return fmt.Errorf("layer %d (%s): %w", i, desc.Digest, err) }
	l, err := r.img.LayerByDigest(desc.Digest)
	if err != nil {
		return fail(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fail(err)
	}
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrArtifact, err))
	}
	sum := sha256.New()
	raw := &boundedReader{r: gz, left: info.TarSize, limit: info.TarSize, sum: sum}
	tr := tar.NewReader(raw)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("%w: %w", ErrArtifact, err))
		}
		normalize(hdr)
		if err := tw.WriteHeader(hdr); err != nil {
			return fail(fmt.Errorf("%w: entry %q: %w", ErrArtifact, hdr.Name, err))
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fail(err)
		}
	}
	// The end-of-archive blocks and the gzip trailer count too; reading to
	// the end makes the client check the compressed digest.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return fail(err)
	}
	if raw.left != 0 {
		return fail(fmt.Errorf("%w: tar of %d bytes, the config says %d", ErrArtifact, info.TarSize-raw.left, info.TarSize))
	}
	if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != info.DiffID {
		return fail(fmt.Errorf("%w: uncompressed digest %s, the config says %s", ErrArtifact, got, info.DiffID))
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fail(fmt.Errorf("%w: %w", ErrArtifact, err))
	}
	return nil
}

// gzipBound is the most bytes a gzip of n bytes takes: a compressor
// stores what it cannot shrink, at some bytes per block, plus a header
// and a trailer. Generous, so that no honest compressor is refused.
func gzipBound(n int64) int64 {
	if n > math.MaxInt64/2 {
		return math.MaxInt64
	}
	return n + n/64 + 4<<10
}

// boundedReader hashes what it reads and fails past left bytes.
type boundedReader struct {
	r           io.Reader
	left, limit int64
	sum         hash.Hash
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		return 0, fmt.Errorf("%w: the layer expands past the %d bytes its config gives", ErrArtifact, b.limit)
	}
	b.left -= int64(n)
	b.sum.Write(p[:n])
	return n, err
}
