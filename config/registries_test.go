package config

import (
	"strings"
	"testing"
)

func TestRegistries(t *testing.T) {
	cfg, err := Parse([]byte("registries: {authFile: /etc/nri-volumes/auth.json, insecureHosts: [Registry.Local:5000, 10.0.0.1, localhost]}"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Registries.InsecureHosts, " "); got != "registry.local:5000 10.0.0.1 localhost" {
		t.Errorf("insecureHosts = %q", got)
	}
	for _, bad := range []struct{ doc, want string }{
		{"registries: {authFile: auth.json}", "registries.authFile"},
		{"registries: {insecureHosts: [\"https://r:5000\"]}", "registries.insecureHosts[0]"},
		{"registries: {insecureHosts: [ok, \"a/b\"]}", "registries.insecureHosts[1]"},
		{"registries: {mirrors: []}", "mirrors"},
	} {
		if _, err := Parse([]byte(bad.doc)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", bad.doc, err, bad.want)
		}
	}
}

func TestRegistriesAllow(t *testing.T) {
	cfg, err := Parse([]byte(`registries:
  maxPullBytes: 1Gi
  allow:
    - {namespaces: [shop, "ci-*"], refs: ["registry.local:5000/shop/*"]}
    - {namespaces: [default], refs: ["registry.local:5000/base/pg@sha256:*"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Registries.MaxPullBytes != 1<<30 {
		t.Errorf("maxPullBytes = %d", cfg.Registries.MaxPullBytes)
	}
	for _, c := range []struct {
		ns, ref string
		want    bool
	}{
		{"shop", "registry.local:5000/shop/pg:16", true},
		{"ci-42", "registry.local:5000/shop/pg@sha256:0123", true},
		{"shop", "registry.local:5000/shop/a/b:1", false},
		{"shop", "registry.local:5001/shop/pg:16", false},
		{"default", "registry.local:5000/shop/pg:16", false},
		{"default", "registry.local:5000/base/pg@sha256:abcd", true},
		{"default", "registry.local:5000/base/pg:16", false},
		{"other", "registry.local:5000/shop/pg:16", false},
	} {
		if got := cfg.Registries.AllowsPull(c.ns, c.ref); got != c.want {
			t.Errorf("AllowsPull(%q, %q) = %v, want %v", c.ns, c.ref, got, c.want)
		}
	}
	if def := Default(); def.Registries.AllowsPull("default", "registry.local:5000/x/y:1") || def.Registries.BlobCacheBytes != 2<<30 {
		t.Errorf("the default configuration allows a pull, or its blob cache is not 2Gi: %+v", def.Registries)
	}
	for _, bad := range []struct{ doc, want string }{
		{"registries: {allow: [{namespaces: [shop]}]}", "registries.allow[0]: give both"},
		{"registries: {allow: [{namespaces: [shop], refs: [\"*/shop/*\"]}]}", "registries.allow[0].refs[0]"},
		{"registries: {allow: [{namespaces: [shop], refs: [pg]}]}", "registries.allow[0].refs[0]"},
		{"registries: {allow: [{namespaces: [\"[\"], refs: [r/x]}]}", "registries.allow[0].namespaces[0]"},
		{"registries: {allow: [{namespaces: [shop], refs: [r/x], ref: [y]}]}", "unknown field \"ref\""},
		{"registries: {maxPullBytes: -1}", `size "-1"`},
		{"registries: {caFile: ca.pem}", "registries.caFile"},
	} {
		if _, err := Parse([]byte(bad.doc)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Parse(%q) = %v, want an error naming %s", bad.doc, err, bad.want)
		}
	}
}
