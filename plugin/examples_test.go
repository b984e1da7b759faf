package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/config"
	"sigs.k8s.io/yaml"
)

// TestExamplePods parses the volume annotations of every example pod, so
// the README's examples stay valid.
func TestExamplePods(t *testing.T) {
	files, err := filepath.Glob("../examples/pods/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example pods: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Kubernetes pods carry them in metadata, crictl pod configs at the top.
		var doc struct {
			Metadata    struct{ Annotations map[string]string } `json:"metadata"`
			Annotations map[string]string                       `json:"annotations"`
		}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, ann := range []map[string]string{doc.Metadata.Annotations, doc.Annotations} {
			for k, v := range ann {
				if !strings.HasPrefix(k, VolumesKey) {
					continue
				}
				if _, err := ParseVolumes(k, v, config.Default().Tmpfs); err != nil {
					t.Errorf("%s: %v", f, err)
				}
			}
		}
	}
}
