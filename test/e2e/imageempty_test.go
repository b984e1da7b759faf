package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// copyUpHooks returns the arguments of the container's createRuntime hooks
// that run nri-volumes' copy-up, as its OCI spec holds them.
func copyUpHooks(e *env, id string) [][]string {
	e.t.Helper()
	var out [][]string
	for _, hm := range createRuntimeHookSpecs(e.cr, id) {
		raw, _ := hm["args"].([]any)
		var args []string
		for _, a := range raw {
			s, _ := a.(string)
			args = append(args, s)
		}
		if slices.Contains(args, "copyup") {
			out = append(out, args)
		}
	}
	return out
}

// TestNoHookWhereTheImageHasNothing: containerd 2.4 sends the image's config
// digest, so once the first container of an image has shown, through its
// copy-up hook, that the image has nothing at /anon, the second container
// of that image gets no hook at all. Both start and write to their own
// volume.
func TestNoHookWhereTheImageHasNothing(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("twice", "default", "uid-twice", map[string]string{podKey: "- /anon"})

	first := e.cr.RunContainer(pod, "first", appImage, nil, nil)
	hooks := copyUpHooks(e, first)
	if len(hooks) != 1 || !slices.Contains(hooks[0], "--image") {
		t.Fatalf("the first container's copy-up hooks: %q, want one that names the image", hooks)
	}
	records, err := os.ReadDir(filepath.Join(e.plugin.Root, "volumes", ".image-empty"))
	if err != nil || len(records) != 1 {
		t.Fatalf("the first container's hook recorded %v (%v), want /anon of the image", records, err)
	}

	second := e.cr.RunContainer(pod, "second", appImage, nil, nil)
	if hooks := copyUpHooks(e, second); len(hooks) != 0 {
		t.Errorf("the second container of the image has copy-up hooks %q, want none", hooks)
	}
	for _, id := range []string{first, second} {
		if got := e.cr.Sh(id, "echo $HOSTNAME-ok > /anon/f && cat /anon/f && ls -ld /anon | cut -c1-10"); got != e.cr.Sh(id, "echo $HOSTNAME-ok")+"drwxr-xr-x\n" {
			t.Errorf("writing to /anon in %s: %q", id, got)
		}
	}
	if vols := e.anonymousVolumes("default"); len(vols) != 2 {
		t.Errorf("anonymous volumes %v, want one per container", vols)
	}
}
