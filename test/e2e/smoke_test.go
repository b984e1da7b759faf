// Package e2e tests nri-volumes end to end: a real containerd built at the
// pinned versions, the plugin as its own process, and crictl as the client.
// The tests need root; they run one at a time (go test -p 1).
package e2e

import (
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestSmoke checks the harness itself, without the plugin: containerd runs,
// a built image imports, and a host-network pod runs a container that
// crictl can exec into.
func TestSmoke(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Runtime(t)
	ctd := harness.StartContainerd(t, bins, harness.ContainerdOptions{})
	ctd.Import(t, harness.Image{
		Name:       "localhost/smoke:e2e",
		Entrypoint: []string{"/bin/sleep", "2147483647"},
		Files: []harness.File{
			harness.RegularFile("/etc/greeting", "hello from the image\n", 0o640, 999, 999),
		},
	})
	cr := ctd.Crictl(t)
	pod := cr.RunPod("smoke", "default", "smoke-uid", nil)
	id := cr.RunContainer(pod, "app", "localhost/smoke:e2e", nil, nil)

	if got := cr.Exec(id, "cat", "/etc/greeting"); got != "hello from the image\n" {
		t.Errorf("cat /etc/greeting = %q", got)
	}
	if got := strings.TrimSpace(cr.Exec(id, "stat", "-c", "%u:%g %a", "/etc/greeting")); got != "999:999 640" {
		t.Errorf("stat /etc/greeting = %q, want 999:999 640", got)
	}
	if got := cr.State(id); got != "CONTAINER_RUNNING" {
		t.Errorf("state = %q", got)
	}
	cr.Stop(id)
	cr.Rm(id)
	cr.RmPod(pod)
}
