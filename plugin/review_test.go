package plugin_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
	"golang.org/x/sys/unix"
)

// TestReviewRemoveContainerBusyIsNeverRetried: RemoveContainer and
// RemovePodSandbox now give up after lockTimeout while a CLI holds the
// store's lock. Nothing retries what they left: the gone container keeps
// its references (volume rm refuses, naming it), its bind pin stays
// mounted, and the pod's anonymous volume stays, until the plugin restarts
// and Synchronizes.
func TestReviewRemoveContainerBusyIsNeverRetried(t *testing.T) {
	allowed := t.TempDir()
	rt := newRuntime(t, func(c *config.Config) {
		c.LockTimeout = config.Duration(100 * time.Millisecond)
		c.BindMounts.AllowedHostPaths = []string{allowed}
	})
	p := rt.connect()
	pod := newPod("p1", "default", map[string]string{plugin.VolumesKey: "- data:/data\n- /cache\n- " + allowed + ":/host"})
	ctr := newContainer("c1", "p1", "app")
	if _, err := rt.create(pod, ctr); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(rt.cfg.Root, "volumes", ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	errC := p.RemoveContainer(ctx, pod, ctr)
	errP := p.RemovePodSandbox(ctx, pod)
	lock.Close() // the CLI is done
	t.Logf("while the CLI held the lock: RemoveContainer: %v; RemovePodSandbox: %v", errC, errP)
	store := rt.store()
	if !eventually(func() bool {
		v, err := store.Get("default", "data")
		return err == nil && len(v.UsedBy) == 0
	}) {
		v, _ := store.Get("default", "data")
		t.Errorf("the removed container c1 still holds volume data: UsedBy %v", v.UsedBy)
	}
	if _, err := os.Stat(filepath.Join(rt.cfg.Root, "pins", "c1")); err == nil {
		t.Errorf("the removed container's pins are still at %s", filepath.Join(rt.cfg.Root, "pins", "c1"))
	}
	if vols, _ := store.List(volumes.ListOptions{Namespace: "default"}); len(vols) != 1 {
		t.Errorf("after the pod's removal the store holds %d volumes, want only data", len(vols))
	}
}
