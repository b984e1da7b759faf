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
}

var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// validate checks each entry and normalizes hosts to lower case.
func (r *Registries) validate() error {
	if r.AuthFile != "" {
		if !filepath.IsAbs(r.AuthFile) {
			return fmt.Errorf("%w: registries.authFile: %q is not an absolute path", ErrInvalid, r.AuthFile)
		}
		r.AuthFile = filepath.Clean(r.AuthFile)
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
