package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestSizedVolumesBoundedRequest asks for 30 new sized volumes of 1 TiB in
// one container, more formatting than fits in one NRI request, and right
// after for a container of another pod with one plain named volume. No
// request may outlive containerd's timeout: the plugin is never dropped,
// the plain volume's container gets its volume (or a clear error, never a
// start without it), and the big container is either refused with a
// message that names the item and the reason, or created with all 30
// volumes; a retry, as kubelet's, gets all of them.
func TestSizedVolumesBoundedRequest(t *testing.T) {
	const n = 30
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{
		// 30 TiB of sparse images on this disk: the node's bound on the
		// sum of sizes is lifted for the test.
		Extra: "limits:\n  overcommit: 1000\n",
	})
	var items strings.Builder
	for i := range n {
		fmt.Fprintf(&items, "- {source: big-%02d, target: /big/%02d, size: 1Ti}\n", i, i)
	}
	big := e.cr.RunPod("big", "default", "uid-big", map[string]string{podKey: items.String()})
	plain := e.cr.RunPod("plain", "default", "uid-plain", map[string]string{podKey: "- plain:/data"})

	bigID, bigErr := e.cr.TryCreateContainer(big, harness.ContainerSpec{Name: "app", Image: appImage})
	plainID, plainErr := e.cr.TryRunContainer(plain, harness.ContainerSpec{Name: "app", Image: appImage})
	switch {
	case plainErr == nil:
		if out, err := e.cr.ExecErr(plainID, "sh", "-c", "echo here > /data/f"); err != nil {
			t.Fatalf("the plain volume's container started without its volume: %v %s; mounts %v", err, out, e.cr.Mounts(plainID))
		}
		got, err := os.ReadFile(filepath.Join(e.plugin.VolumeDir("default", "plain"), "f"))
		if err != nil || string(got) != "here\n" {
			t.Errorf("the plain volume's container started, but its write is not in the store: %q, %v; mounts %v", got, err, e.cr.Mounts(plainID))
		}
	case !strings.Contains(plainErr.Error(), "plain"):
		t.Errorf("the plain volume's container failed without naming its volume: %v", plainErr)
	}

	if bigErr != nil {
		t.Logf("the big container, first try: %v", bigErr)
		if msg := bigErr.Error(); !strings.Contains(msg, podKey) || !strings.Contains(msg, "big-") || !strings.Contains(msg, "format") {
			t.Errorf("the big container was refused without naming the key, the item and the reason: %v", bigErr)
		}
		// What kubelet does: try again, until the volumes are ready.
		deadline := time.Now().Add(3 * time.Minute)
		for bigErr != nil && time.Now().Before(deadline) {
			time.Sleep(2 * time.Second)
			bigID, bigErr = e.cr.TryCreateContainer(big, harness.ContainerSpec{Name: "app", Image: appImage})
		}
		if bigErr != nil {
			t.Fatalf("the big container is still refused after 3 minutes of retries: %v", bigErr)
		}
	}
	mounts := e.cr.Mounts(bigID)
	for i := range n {
		name := fmt.Sprintf("big-%02d", i)
		if got := mounts[fmt.Sprintf("/big/%02d", i)]; got != e.plugin.VolumeDir("default", name) {
			t.Errorf("the big container has %q at /big/%02d, want volume %s", got, i, name)
		}
	}
	if c := closedCount(e.ctd.Log()); c != 0 {
		t.Errorf("containerd closed its connection to the plugin %d time(s):\n%s", c, e.ctd.LogTail(40))
	}
}
