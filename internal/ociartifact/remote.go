package ociartifact

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RemoteOptions say how to reach a registry. TLS is always verified; plain
// HTTP is used only for InsecureHosts.
type RemoteOptions struct {
	// InsecureHosts are registries ("host" or "host:port") that may be
	// reached over plain HTTP when TLS fails, as the administrator listed
	// them (registries.insecureHosts).
	InsecureHosts []string
	// AuthFile is a docker-style config.json with credentials; empty:
	// the usual places ($DOCKER_CONFIG, ~/.docker, $REGISTRY_AUTH_FILE).
	AuthFile string
	// CAFile adds a PEM CA bundle to the system's roots.
	CAFile string
	// UserAgent names the client to the registry.
	UserAgent string
	// Cache, when set, keeps the blobs pulls read, by digest.
	Cache *BlobCache
	// MaxPullBytes bounds what Fetch accepts of an artifact (0: no
	// bound): layers that the manifest declares larger in all than a gzip
	// of that many bytes can be are refused before any is downloaded, as
	// a download is as large as the registry declares.
	MaxPullBytes int64
}

// Counter counts what a transport sent in blob uploads.
type Counter struct {
	// Blobs counts finished blob uploads; Bytes the bytes sent in them.
	Blobs, Bytes atomic.Int64
}

type countingTransport struct {
	next http.RoundTripper
	c    *Counter
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.Contains(req.URL.Path, "/blobs/uploads/") && req.Body != nil &&
		(req.Method == http.MethodPatch || req.Method == http.MethodPut || req.Method == http.MethodPost) {
		req.Body = &countingBody{ReadCloser: req.Body, n: &t.c.Bytes}
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodPut && resp.StatusCode == http.StatusCreated &&
		strings.Contains(req.URL.Path, "/blobs/uploads/") {
		t.c.Blobs.Add(1)
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// parseRef parses a reference as pushed or pulled; it must name a tag or a
// digest, so that nothing is pushed to or pulled from "latest" by accident.
func (o RemoteOptions) parseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err == nil && o.insecure(r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.StrictValidation, name.Insecure)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reference %q (want HOST/REPOSITORY:TAG or @sha256:DIGEST): %w", ErrArtifact, ref, err)
	}
	return r, nil
}

func (o RemoteOptions) remote(ctx context.Context, c *Counter) ([]remote.Option, error) {
	base := remote.DefaultTransport.(*http.Transport).Clone()
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %q: no PEM certificate in it", o.CAFile)
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var rt http.RoundTripper = httpsOnly{next: base, o: o}
	if c != nil {
		rt = &countingTransport{next: rt, c: c}
	}
	var kc authn.Keychain = authn.DefaultKeychain
	if o.AuthFile != "" {
		f, err := os.Open(o.AuthFile)
		if err != nil {
			return nil, fmt.Errorf("auth file: %w", err)
		}
		defer f.Close()
		cf, err := config.LoadFromReader(f)
		if err != nil {
			return nil, fmt.Errorf("auth file %q: %w", o.AuthFile, err)
		}
		kc = fileKeychain{cf}
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(rt), remote.WithAuthFromKeychain(kc)}
	if o.UserAgent != "" {
		opts = append(opts, remote.WithUserAgent(o.UserAgent))
	}
	return opts, nil
}

// httpsOnly refuses plain HTTP but to the insecure hosts: go-containerregistry
// falls back to it for registries on localhost when TLS fails, and then
// credentials and data would travel in the clear, and an attacker on the path
// could feed the pull.
type httpsOnly struct {
	next http.RoundTripper
	o    RemoteOptions
}

func (t httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !t.o.insecure(req.URL.Host) {
		return nil, fmt.Errorf("%s %s: plain HTTP is not used, only verified TLS (registries.insecureHosts lists the exceptions)", req.Method, req.URL.Redacted())
	}
	return t.next.RoundTrip(req)
}

// insecure says whether host is one of the insecure hosts.
func (o RemoteOptions) insecure(host string) bool {
	host = strings.ToLower(host)
	for _, h := range o.InsecureHosts {
		if strings.ToLower(h) == host {
			return true
		}
	}
	return false
}

// fileKeychain finds credentials in one docker-style config file, by
// registry host.
type fileKeychain struct{ cf *configfile.ConfigFile }

func (k fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	key := target.RegistryStr()
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	cfg, err := k.cf.GetAuthConfig(key)
	if err != nil {
		return nil, err
	}
	if cfg.Username == "" && cfg.Password == "" && cfg.Auth == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: cfg.Username, Password: cfg.Password, Auth: cfg.Auth,
		IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken,
	}), nil
}
