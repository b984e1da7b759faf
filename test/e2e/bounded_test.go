package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
	"golang.org/x/sys/unix"
)

// TestSymlinkedRootRestart runs the store under a ROOT reached through a
// symlink (a bigger disk linked in): after a plugin restart the plugin still
// knows which container uses a named volume, so `volume rm` refuses it,
// naming the container, and `volume prune -a` leaves it and its data.
func TestSymlinkedRootRestart(t *testing.T) {
	disk := t.TempDir()
	link := filepath.Join(t.TempDir(), "root")
	if err := os.Symlink(disk, link); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{Root: link})
	pod := e.cr.RunPod("sym", "default", "uid-sym", map[string]string{podKey: "- shared:/shared"})
	ctr := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(ctr, "echo kept > /shared/f")

	e.plugin.Stop()
	e.plugin.Start(t)

	res := e.plugin.Volume("rm", "shared")
	if res.Err == nil || !strings.Contains(res.Stderr, ctr) {
		t.Errorf("volume rm of a volume a running container uses, after a restart: %v; want it refused naming %s", res.Err, ctr)
	}
	e.volume("prune", "-a", "-f")
	if got := e.volumeList(); !slices.Contains(got, "shared") {
		t.Errorf("volume prune -a removed the volume a running container uses: volumes %v", got)
	}
	if got := e.cr.Exec(ctr, "cat", "/shared/f"); got != "kept\n" {
		t.Errorf("the container reads %q from its volume", got)
	}
}

// TestStoreLockedElsewhere holds the store's lock from another process, as
// a long CLI command would: creating a container that needs a volume fails
// with the plugin's deadline error naming the volume, instead of NRI
// dropping the plugin after its request timeout and starting the container
// without its volume; once the lock is free, the next container gets it.
func TestStoreLockedElsewhere(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("locked", "default", "uid-locked", map[string]string{podKey: "- data:/data"})
	lock, err := os.OpenFile(filepath.Join(e.plugin.Root, "volumes", ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	id, err := e.cr.CreateContainer(pod, "app", appImage, nil, nil)
	if err == nil {
		t.Fatalf("container %s was created while the store was locked; its mounts: %v", id, e.cr.Mounts(id))
	}
	for _, want := range []string{"volume store busy", "default/data", filepath.Join("volumes", ".lock")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("create with the store locked: %v; want the error to name %q", err, want)
		}
	}
	lock.Close()
	id = e.cr.RunContainer(pod, "app2", appImage, nil, nil)
	if e.cr.Mounts(id)["/data"] != e.plugin.VolumeDir("default", "data") {
		t.Errorf("after the lock is free the container mounts %v", e.cr.Mounts(id))
	}
}

// TestCreateDuringPrune prunes a store of many unused volumes with the CLI
// while containers are being created: each gets its volume (the plugin is
// never dropped for a slow request), and the prune removes every unused
// volume and none in use.
func TestCreateDuringPrune(t *testing.T) {
	const n = 3000
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	for i := range n {
		name := fmt.Sprintf("unused-%04d", i)
		dir := filepath.Join(e.plugin.Root, "volumes", "default", name)
		if err := os.MkdirAll(filepath.Join(dir, "_data"), 0o755); err != nil {
			t.Fatal(err)
		}
		meta := fmt.Sprintf(`{"Name":%q,"Namespace":"default","CreatedAt":"2026-01-01T00:00:00Z","Labels":{},"Anonymous":false}`, name)
		if err := os.WriteFile(filepath.Join(dir, "volume.json"), []byte(meta), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pod := e.cr.RunPod("busy", "default", "uid-busy", map[string]string{podKey: "- data:/data"})

	prune := exec.Command(e.plugin.Bin, "volume", "prune", "--root", e.plugin.Root, "-a", "-f")
	var out strings.Builder
	prune.Stdout, prune.Stderr = &out, &out
	if err := prune.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- prune.Wait() }()
	var ids []string
	var pruneErr error
	for running := true; running; {
		select {
		case pruneErr = <-done:
			running = false
		default:
		}
		id, err := e.cr.CreateContainer(pod, fmt.Sprintf("app-%d", len(ids)), appImage, nil, nil)
		if err != nil {
			t.Fatalf("create while the CLI prunes: %v", err)
		}
		ids = append(ids, id)
	}
	if pruneErr != nil {
		t.Fatalf("volume prune: %v\n%s", pruneErr, out.String())
	}
	t.Logf("%d containers created during the prune", len(ids))
	var without []string
	for _, id := range ids {
		if e.cr.Mounts(id)["/data"] != e.plugin.VolumeDir("default", "data") {
			without = append(without, id)
		}
	}
	if len(without) > 0 {
		t.Errorf("%d of the %d containers created during the prune lack their volume at /data (the plugin was dropped?); the first: %s, mounts %v",
			len(without), len(ids), without[0], e.cr.Mounts(without[0]))
	}
	if got := e.volumeList(); !slices.Equal(got, []string{"data"}) {
		t.Errorf("after the prune: %d volumes (%v...), want only data, in use", len(got), got[:min(len(got), 3)])
	}
}
