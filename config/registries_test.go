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
