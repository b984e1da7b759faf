// Package ociartifact owns the OCI artifact that carries a volume's data
// through a registry: an ordinary OCI image manifest whose layers are plain
// tar+gzip, so generic OCI tools read it, and whose config records what the
// store needs to make the volume again. It builds the artifact from a tar
// stream (such as the store's Export writes), splits it into layers so that a
// small change re-uploads a small part, pushes it, and on pull hands back one
// verified tar stream for the store's Import (Stream); it also reads one
// directory of an ordinary image (WriteImagePath). Its only state is the
// BlobCache, a directory of pulled blobs that is safe for concurrent use;
// its other values are not.
package ociartifact

import (
	"errors"
	"regexp"
)

// Media types of the artifact. The layers are those of an ordinary image
// so that tools that flatten images (crane export, oras pull) read them.
const (
	ManifestMediaType = "application/vnd.oci.image.manifest.v1+json"
	ConfigMediaType   = "application/vnd.nri-volumes.volume.config.v1+json"
	LayerMediaType    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Manifest annotations. created is the OCI one; the others say where the
// data came from.
const (
	AnnotationCreated   = "org.opencontainers.image.created"
	AnnotationVolume    = "dev.noderesource.volumes.volume"
	AnnotationNamespace = "dev.noderesource.volumes.namespace"
)

// ErrArtifact marks an artifact that pull refuses: not ours, inconsistent,
// beyond the limits, or failing a digest. The message says which and why.
var ErrArtifact = errors.New("refused artifact")

// Config is the artifact's config blob. Owner and mode of the volume's root
// travel in its tar (its "./" entry) like every other entry's; the config
// carries what the tar cannot and what pull must check before it downloads.
type Config struct {
	// Labels of the volume that was pushed.
	Labels map[string]string `json:"labels,omitempty"`
	// UID, GID and Mode of the volume's root (Mode octal, such as "0755").
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Mode string `json:"mode"`
	// Limit is the enforced size of the pushed volume in bytes (0:
	// unbounded) and Backend what enforced it.
	Limit   int64  `json:"limit,omitempty"`
	Backend string `json:"backend,omitempty"`
	// Bytes sums the sizes of the regular files; Entries counts all.
	Bytes   int64 `json:"bytes"`
	Entries int64 `json:"entries"`
	// Layers describe the manifest's layers, in its order.
	Layers []LayerInfo `json:"layers"`
}

// LayerInfo is what pull checks a layer's uncompressed stream against.
type LayerInfo struct {
	// DiffID is the digest of the uncompressed tar, "sha256:...".
	DiffID string `json:"diffID"`
	// TarSize is the length of the uncompressed tar: pull reads no more.
	TarSize int64 `json:"tarSize"`
	// Bytes sums the sizes of its regular files; Entries counts all.
	Bytes   int64 `json:"bytes"`
	Entries int64 `json:"entries"`
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
