package ociartifact

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Seal writes the config and the manifest of a from a.Config and a.Layers.
// Build calls it; a caller that changes a.Config (a test making a hostile
// artifact) calls it again.
func (a *Artifact) Seal(meta Meta) error {
	conf, err := json.Marshal(a.Config)
	if err != nil {
		return err
	}
	a.RawConf = conf
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.MediaType(ManifestMediaType),
		Config:        descriptor(ConfigMediaType, conf),
		Annotations: map[string]string{
			AnnotationVolume:    meta.Volume,
			AnnotationNamespace: meta.Namespace,
		},
	}
	if meta.Created != "" {
		m.Annotations[AnnotationCreated] = meta.Created
	}
	for i, l := range a.Layers {
		h, err := v1.NewHash(l.Digest)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: LayerMediaType, Size: l.Size, Digest: h})
	}
	a.Manifest, err = json.Marshal(m)
	return err
}

func descriptor(mediaType string, blob []byte) v1.Descriptor {
	sum := sha256.Sum256(blob)
	return v1.Descriptor{
		MediaType: types.MediaType(mediaType),
		Size:      int64(len(blob)),
		Digest:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])},
	}
}
