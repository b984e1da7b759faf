package ociartifact

import (
	"context"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PushStats say what a push sent: Blobs uploaded and their Bytes; blobs
// the registry had already are not sent. Digest is the manifest's.
type PushStats struct {
	Layers int
	Blobs  int64
	Bytes  int64
	Digest string
}

// Push uploads a to ref. The client asks the registry for each blob first
// and uploads only those it lacks, so unchanged layers cost a request each.
func (a *Artifact) Push(ctx context.Context, ref string, o RemoteOptions) (PushStats, error) {
	stats := PushStats{Layers: len(a.Layers)}
	r, err := o.parseRef(ref)
	if err != nil {
		return stats, err
	}
	var c Counter
	opts, err := o.remote(ctx, &c)
	if err != nil {
		return stats, err
	}
	img, err := partial.CompressedToImage(imageCore{a})
	if err != nil {
		return stats, err
	}
	err = remote.Write(r, img, opts...)
	stats.Blobs, stats.Bytes = c.Blobs.Load(), c.Bytes.Load()
	if err != nil {
		return stats, fmt.Errorf("pushing to %q: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return stats, err
	}
	stats.Digest = d.String()
	return stats, nil
}

// imageCore shows a built artifact to go-containerregistry as an image
// whose manifest and config are ours, byte for byte.
type imageCore struct{ a *Artifact }

func (i imageCore) RawConfigFile() ([]byte, error) { return i.a.RawConf, nil }
func (i imageCore) MediaType() (types.MediaType, error) {
	return types.MediaType(ManifestMediaType), nil
}
func (i imageCore) RawManifest() ([]byte, error) { return i.a.Manifest, nil }

func (i imageCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h.String() == descriptor(ConfigMediaType, i.a.RawConf).Digest.String() {
		return partial.ConfigLayer(i)
	}
	for _, l := range i.a.Layers {
		if l.Digest == h.String() {
			return fileLayer{l}, nil
		}
	}
	return nil, fmt.Errorf("no blob %s in the artifact", h)
}

// ConfigFile is asked for by some of go-containerregistry's helpers; the
// config is not an image's, so it has none.
func (i imageCore) ConfigFile() (*v1.ConfigFile, error) { return &v1.ConfigFile{}, nil }

type fileLayer struct{ l *Layer }

func (f fileLayer) Digest() (v1.Hash, error)            { return v1.NewHash(f.l.Digest) }
func (f fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(f.l.Path) }
func (f fileLayer) Size() (int64, error)                { return f.l.Size, nil }
func (f fileLayer) MediaType() (types.MediaType, error) { return LayerMediaType, nil }
