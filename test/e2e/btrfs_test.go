package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// subvolImage is busybox with mksubvol (testdata/mksubvol), which makes a
// btrfs subvolume with the ioctl any process may call.
const subvolImage = "localhost/subvol:e2e"

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// buildMksubvol builds testdata/mksubvol statically into dir.
func buildMksubvol(t *testing.T, dir string) []byte {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mksubvol")
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", out, "./test/e2e/testdata/mksubvol")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build mksubvol: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBtrfsSubvolumesInPod is a pod with no capability on a store on btrfs
// that makes subvolumes inside its volumes, two deep, fills them and makes
// one read-only: a sized volume's limit still holds, ls -s counts the bytes
// in the subvolumes, the plugin deletes the pod's anonymous volume with it,
// volume rm after the pod deletes the named ones, nothing stays in the trash
// and volume check finds nothing.
func TestBtrfsSubvolumesInPod(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		t.Fatalf("mkfs.btrfs (btrfs-progs) is needed: %v", err)
	}
	mnt := harness.LoopBtrfs(t, t.TempDir(), 1<<30)
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{Root: filepath.Join(mnt, "store")})
	e.ctd.Import(t, harness.Image{
		Name:       subvolImage,
		Entrypoint: []string{"/bin/sleep", "2147483647"},
		Files:      []harness.File{harness.RegularFile("/bin/mksubvol", string(buildMksubvol(t, t.TempDir())), 0o755, 0, 0)},
	})
	pod := e.cr.RunPod("subvol", "default", "uid-subvol", map[string]string{
		podKey: "- {source: sized, target: /sized, size: 16Mi}\n- plain:/plain\n- /anon",
	})
	id, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "app", Image: subvolImage, NoCapabilities: true})
	if err != nil {
		t.Fatal(err)
	}
	e.cr.Start(id)

	e.cr.Sh(id, "mksubvol /plain a && mksubvol /plain/a b && mkdir /plain/a/b/d && "+
		"dd if=/dev/zero of=/plain/a/b/d/f bs=1M count=8 2>/dev/null && ln -s / /plain/a/b/root && mksubvol -ro /plain/a && "+
		"mksubvol /anon a && mksubvol /anon/a b && echo x > /anon/a/b/f && sync")
	// On the sized volume the subvolume is refused (its data is ext4) or,
	// were it made, still under the size.
	out, err := e.cr.ExecErr(id, "sh", "-c", "{ mksubvol /sized s || mkdir /sized/s; } && dd if=/dev/zero of=/sized/s/big bs=1M count=32 && sync")
	if err == nil {
		t.Errorf("32 MiB written into a subvolume inside a 16 MiB volume: %s", out)
	} else if msg := err.Error(); !strings.Contains(msg, "No space left on device") && !strings.Contains(msg, "quota exceeded") {
		t.Errorf("writing 32 MiB into /sized/s failed, but not for space: %v", err)
	}
	if v := inspectOne(t, e, "plain"); v.Size == nil || *v.Size < 8<<20 {
		t.Errorf("inspect -s plain, 8 MiB in nested subvolumes: Size %s", jsonOf(v.Size))
	}

	// The pod's anonymous volume goes with it, deleted by the plugin's
	// reaper.
	e.cr.RmPod(pod)
	trash := filepath.Join(e.plugin.Root, "volumes", ".trash")
	if !eventually(func() bool {
		left, _ := os.ReadDir(trash)
		return len(e.anonymousVolumes("default")) == 0 && len(left) == 0
	}) {
		left, _ := os.ReadDir(trash)
		t.Errorf("after the pod: anonymous volumes %v, in the trash %v", e.anonymousVolumes("default"), left)
	}
	if res := e.plugin.Volume("rm", "sized", "plain"); res.Err != nil {
		t.Fatalf("volume rm: %v", res.Err)
	}
	for _, l := range storeVolumes(t, e.plugin.Root) {
		if strings.HasPrefix(l, ".trash/") || !strings.HasPrefix(l, ".") {
			t.Errorf("left in the store after rm: %s", l)
		}
	}
	if out := e.volume("check", "-A"); strings.Count(out, "\n") != 1 {
		t.Errorf("volume check after rm:\n%s", out)
	}
	if _, err := os.Stat(harness.BusyboxPath); err != nil {
		t.Errorf("removal followed the symlink to / onto the host: %v", err)
	}
}
