package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestCopyUpHookRejected runs containerd with a validator that refuses OCI
// hooks. A container that needs copy-up is refused with a message that says
// why, rather than started on a volume without the image's content; one that
// needs no copy (nocopy) starts, and so does one whose image volume takes
// containerd's own copy over.
func TestCopyUpHookRejected(t *testing.T) {
	reject := &harness.DefaultValidator{RejectOCIHookAdjustment: true}
	t.Run("containerd's copy adopted", func(t *testing.T) {
		e := newEnv(t, harness.ContainerdOptions{DefaultValidator: reject}, harness.PluginConfig{})
		e.ctd.Import(t, dbImage)
		pod := e.cr.RunPod("db", "default", "uid-db", nil)
		id, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "db", Image: dbImage.Name})
		if err != nil {
			t.Fatalf("an image volume filled from containerd's copy needs no hook, yet creation failed: %v", err)
		}
		e.cr.Start(id)
		if got := e.cr.Exec(id, "cat", "/data/seed.txt"); got != "seeded by the image\n" {
			t.Errorf("/data/seed.txt = %q, want the image's", got)
		}
	})
	// Without containerd's copy, the image's content needs the hook.
	e := newEnv(t, harness.ContainerdOptions{DefaultValidator: reject, IgnoreImageDefinedVolumes: true}, harness.PluginConfig{})
	e.ctd.Import(t, dbImage)

	pod := e.cr.RunPod("db", "default", "uid-db", nil)
	_, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "db", Image: dbImage.Name})
	if err == nil {
		t.Fatal("a container that needs copy-up was created although OCI hooks are refused")
	}
	if !strings.Contains(err.Error(), "OCI hook") {
		t.Errorf("the refusal does not say the OCI hook was the reason: %v", err)
	}
	for _, name := range e.anonymousVolumes("default") {
		entries, err := os.ReadDir(filepath.Join(e.plugin.Root, "volumes", "default", name, "_data"))
		if err != nil || len(entries) != 0 {
			t.Errorf("volume %s after the refusal: %d entries, %v; want it empty", name, len(entries), err)
		}
	}

	plain := e.cr.RunPod("plain", "default", "uid-plain", map[string]string{
		podKey: "- cache:/data:nocopy",
	})
	id, err := e.cr.CreateContainerSpec(plain, harness.ContainerSpec{Name: "db", Image: dbImage.Name})
	if err != nil {
		t.Fatalf("a nocopy volume needs no hook, yet creation failed: %v", err)
	}
	e.cr.Start(id)
	if got := e.cr.Exec(id, "ls", "-A", "/data"); got != "" {
		t.Errorf("nocopy volume has %q, want it empty", got)
	}
}
