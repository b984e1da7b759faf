package config

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
)

// Registries says how volume push and pull reach OCI registries.
type Registries struct {
	// AuthFile is a docker-style config.json with credentials, used when
	// the command gives no --auth-file; empty: the usual places.
	AuthFile string `json:"authFile"`
	// InsecureHosts are registries ("host" or "host:port") that may be
	// reached over plain HTTP when TLS fails; every other one only over
	// verified TLS.
	InsecureHosts []string `json:"insecureHosts"`
	// CAFile is a PEM bundle of CAs trusted besides the system's, for
	// registries whose certificates a private CA signs.
	CAFile string `json:"caFile"`
	// Allow lists the references each namespace's pods may seed volumes
	// from (from: in the long syntax); empty: none.
	Allow []PullRule `json:"allow"`
	// MaxPullBytes bounds the bytes one seeding pull writes; 0: only the
	// volume's size and limits.copyUpMaxSize bound it.
	MaxPullBytes Size `json:"maxPullBytes"`
	// BlobCacheBytes bounds the node's cache of the blobs that seeding
	// pulls read (ROOT/blobs); 0: nothing is kept, only pulls running at
	// once share a download.
	BlobCacheBytes Size `json:"blobCacheBytes"`
}

// DefaultBlobCacheBytes is the default registries.blobCacheBytes.
const DefaultBlobCacheBytes Size = 2 << 30

var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// validate checks each entry and normalizes hosts to lower case.
func (r *Registries) validate() error {
	if r.AuthFile != "" {
		if !filepath.IsAbs(r.AuthFile) {
			return fmt.Errorf("%w: registries.authFile: %q is not an absolute path", ErrInvalid, r.AuthFile)
		}
		r.AuthFile = filepath.Clean(r.AuthFile)
	}
	if r.CAFile != "" {
		if !filepath.IsAbs(r.CAFile) {
			return fmt.Errorf("%w: registries.caFile: %q is not an absolute path", ErrInvalid, r.CAFile)
		}
		r.CAFile = filepath.Clean(r.CAFile)
	}
	if r.MaxPullBytes < 0 || r.BlobCacheBytes < 0 {
		return fmt.Errorf("%w: registries.maxPullBytes and registries.blobCacheBytes cannot be negative", ErrInvalid)
	}
	if err := validateRules(r.Allow); err != nil {
		return err
	}
	for i, h := range r.InsecureHosts {
		h = strings.ToLower(h)
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = h, ""
		}
		if host == "" || (!hostRE.MatchString(host) && net.ParseIP(strings.Trim(host, "[]")) == nil) || strings.ContainsAny(port, "/:") {
			return fmt.Errorf("%w: registries.insecureHosts[%d]: %q is not a host or host:port", ErrInvalid, i, r.InsecureHosts[i])
		}
		r.InsecureHosts[i] = h
	}
	return nil
}
