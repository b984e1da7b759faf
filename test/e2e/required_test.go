package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// The default validator settings of examples/containerd/nri.toml.
const (
	requiredPlugin  = "volumes"
	tolerateMissing = "tolerate-missing-plugins.noderesource.dev"
)

// requiredPluginMissing matches the default validator's refusal.
var requiredPluginMissing = regexp.MustCompile(`required plugin \\?"` + requiredPlugin + `\\?" not present`)

// exampleValidator is the default validator as examples/containerd/nri.toml
// configures it; the test checks that the example says so.
func exampleValidator(t *testing.T) *harness.DefaultValidator {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "examples", "containerd", "nri.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[plugins.'io.containerd.nri.v1.nri'.default_validator]", "enable = true",
		"required_plugins = ['" + requiredPlugin + "']", "tolerate_missing_plugins_annotation = '" + tolerateMissing + "'"} {
		if !strings.Contains(string(data), want) {
			t.Fatalf("examples/containerd/nri.toml lacks %q; keep this test in step with it", want)
		}
	}
	return &harness.DefaultValidator{RequiredPlugins: []string{requiredPlugin}, TolerateMissingPluginsAnnotation: tolerateMissing}
}

// TestRequiredPlugin configures NRI's default validator to require the
// plugin: with the plugin down (not started yet, or crashed) containers are
// refused, with it up they get their volumes, and a pod annotated to
// tolerate missing plugins starts regardless.
func TestRequiredPlugin(t *testing.T) {
	bins := testBins(t)
	ctd := harness.StartContainerd(t, bins, harness.ContainerdOptions{DefaultValidator: exampleValidator(t)})
	ctd.Import(t, harness.Image{Name: appImage, Entrypoint: []string{"/bin/sleep", "2147483647"}})
	cr := ctd.Crictl(t)
	ann := map[string]string{podKey: "- data:/data"}
	pod := cr.RunPod("app", "default", "uid-app", ann)

	assertRefused := func(when string) {
		t.Helper()
		id, err := cr.CreateContainer(pod, "app", appImage, nil, nil)
		if err == nil {
			cr.Rm(id)
			t.Fatalf("%s: a container was created without the required plugin", when)
		}
		// crictl prints the message with its quotes escaped.
		if !requiredPluginMissing.MatchString(err.Error()) {
			t.Errorf("%s: the error does not name the required plugin: %v", when, err)
		}
	}
	assertRefused("plugin not started")

	tolerant := cr.RunPod("system", "kube-system", "uid-system", map[string]string{
		tolerateMissing + "/pod": "true",
		podKey:                   "- data:/data",
	})
	sys := cr.RunContainer(tolerant, "app", appImage, nil, nil)
	if got := cr.State(sys); got != "CONTAINER_RUNNING" {
		t.Errorf("the tolerating pod's container is %s", got)
	}

	p := harness.StartPlugin(t, ctd, harness.PluginOptions{})
	id := cr.RunContainer(pod, "app", appImage, nil, nil)
	cr.Sh(id, "echo guarded > /data/f")
	if got, err := os.ReadFile(filepath.Join(p.VolumeDir("default", "data"), "f")); err != nil || string(got) != "guarded\n" {
		t.Errorf("with the plugin up the volume holds %q, %v", got, err)
	}

	closed := closedCount(ctd.Log())
	p.Kill()
	// containerd drops the plugin when its connection closes; wait until it
	// has, rather than race it.
	deadline := time.Now().Add(10 * time.Second)
	for closedCount(ctd.Log()) == closed && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	pod = cr.RunPod("app-after-crash", "default", "uid-app-2", ann)
	assertRefused("plugin crashed")
}

// closedCount counts containerd's log lines saying that the connection to
// the plugin 10-volumes closed.
func closedCount(log string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "connection to plugin") && strings.Contains(line, `10-volumes`) && strings.Contains(line, "closed") {
			n++
		}
	}
	return n
}
