package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the hook small: runc runs it before the process of
// every container that needs a copy-up, and its start time grows with what
// it links. None of the plugin's NRI, gRPC, CLI, metrics or YAML packages
// may come in.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	banned := []string{"github.com/containerd/", "google.golang.org/grpc", "google.golang.org/protobuf", "github.com/spf13/",
		"github.com/prometheus/", "sigs.k8s.io/yaml", "gopkg.in/yaml", "go.yaml.in/", "net/http",
		"github.com/nri-volumes/nri-volumes/plugin", "github.com/nri-volumes/nri-volumes/config"}
	for _, pkg := range strings.Fields(string(out)) {
		for _, b := range banned {
			if strings.HasPrefix(pkg, b) {
				t.Errorf("nri-volumes-hook depends on %s", pkg)
			}
		}
	}
}
