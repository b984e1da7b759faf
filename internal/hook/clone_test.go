package hook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// TestCopyUpFillsPendingClone: a volume made with cloneOf of a plain volume
// is filled by the hook from that volume, never from the image at its
// target; the copy counts against the pod's copy-up budget, and one over it
// fails the container with the budget named and leaves the clone empty and
// still to be copied.
func TestCopyUpFillsPendingClone(t *testing.T) {
	e := newHookEnv(t)
	golden := e.create(t, "default", "golden")
	if err := os.WriteFile(filepath.Join(golden, "fixture"), []byte("golden data"), 0o644); err != nil {
		t.Fatal(err)
	}
	vols, _, err := e.store.Acquire("ctr1", []volumes.Request{
		{Namespace: "default", Name: "mine", CreateOptions: volumes.CreateOptions{CloneOf: &volumes.CloneSource{Volume: "golden"}}},
		{Namespace: "default", Name: "small", CreateOptions: volumes.CreateOptions{CloneOf: &volumes.CloneSource{Volume: "golden"}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = e.run(t, "--pod", "pod1", "--pod-max-bytes", "5", "--volume", "default/small=/data")
	if err == nil || !strings.Contains(err.Error(), "copyUpMaxSizePerPod") || !strings.Contains(err.Error(), "default/small") {
		t.Errorf("a clone over the pod's copy-up budget: %v", err)
	}
	if names, _ := os.ReadDir(vols[1].Mountpoint); len(names) != 0 {
		t.Errorf("the clone over budget holds %d entries", len(names))
	}
	if err := e.run(t, "--pod", "pod2", "--pod-max-bytes", "15", "--volume", "default/mine=/data"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(vols[0].Mountpoint, "fixture")); err != nil || string(b) != "golden data" {
		t.Errorf("the clone holds %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(vols[0].Mountpoint, "hello.txt")); err == nil {
		t.Error("the image's content was copied into the clone")
	}
	// The budget counted the clone's bytes: the pod has 4 left.
	if err := e.run(t, "--pod", "pod2", "--pod-max-bytes", "15", "--volume", "default/small=/data"); err == nil {
		t.Error("a second clone within a pod's budget that the first used up was copied")
	}
}
