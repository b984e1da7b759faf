package plugin_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
	"golang.org/x/sys/unix"
)

// podUserNS starts a process in a user namespace of its own, as a pod's
// sandbox with hostUsers: false is, and returns its namespace's path.
func podUserNS(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t, "needs root")
	cmd := exec.Command("sleep", "60")
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 65536, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: ids, GidMappings: ids}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user"
}

func usernsContainer(id, podID, nsPath string) *api.Container {
	c := newContainer(id, podID, "app")
	c.Linux = &api.LinuxContainer{Namespaces: []*api.LinuxNamespace{{Type: "user", Path: nsPath}}}
	return c
}

// TestUserNamespaceMounts: a container with a user namespace gets its
// volumes and bind mounts idmapped (ridmap), its tmpfs not; one without gets
// no idmapping.
func TestUserNamespaceMounts(t *testing.T) {
	allowed := t.TempDir()
	rt := newRuntime(t, func(c *config.Config) { c.BindMounts.AllowedHostPaths = []string{allowed} })
	rt.connect()
	ann := map[string]string{plugin.VolumesKey: "- data:/data\n- /cache\n- " + allowed + ":/host\n- {type: tmpfs, target: /tmp}"}
	adj, err := rt.create(newPod("p1", "default", ann), usernsContainer("c1", "p1", podUserNS(t)))
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]bool{"/data": true, "/cache": true, "/host": true, "/tmp": false} {
		m := findMount(adj, dst)
		if m == nil || slices.Contains(m.Options, "ridmap") != want || slices.Contains(m.Options, "idmap") {
			t.Errorf("mount %s = %+v, want ridmap %v", dst, m, want)
		}
	}
	adj, err = rt.create(newPod("p2", "default", ann), newContainer("c2", "p2", "app"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range adj.GetMounts() {
		if slices.Contains(m.Options, "ridmap") {
			t.Errorf("mount %s of a container without a user namespace is idmapped", m.Destination)
		}
	}
}

// TestUserNamespaceRefusedOnRamfs: a store that cannot be idmapped refuses
// a container with a user namespace, naming the file system, and makes
// nothing for it.
func TestUserNamespaceRefusedOnRamfs(t *testing.T) {
	dir := t.TempDir()
	testutil.RequireRoot(t, "needs root")
	if err := unix.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	rt := newRuntime(t, func(c *config.Config) { c.Root = dir + "/store" })
	rt.connect()
	ann := map[string]string{plugin.VolumesKey: "- data:/data"}
	_, err := rt.create(newPod("p1", "default", ann), usernsContainer("c1", "p1", podUserNS(t)))
	if err == nil || !strings.Contains(err.Error(), "ramfs, which cannot be idmapped") || !strings.Contains(err.Error(), "/data") {
		t.Fatalf("CreateContainer on ramfs = %v, want a refusal naming ramfs and /data", err)
	}
	if entries, _ := os.ReadDir(dir + "/store/volumes/default"); len(entries) != 0 {
		t.Errorf("the refused container left %v", entries)
	}
}

// TestChownAndOwnershipHookArgs: U and volumes with an owner reach the hook.
func TestChownAndOwnershipHookArgs(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	ann := map[string]string{plugin.VolumesKey: "- {source: owned, target: /owned, uid: 7, mode: '0700'}\n- mine:/mine:U,nocopy"}
	adj, err := rt.create(newPod("p1", "default", ann), newContainer("c1", "p1", "app"))
	if err != nil {
		t.Fatal(err)
	}
	hooks := adj.GetHooks().GetCreateRuntime()
	if len(hooks) != 1 {
		t.Fatalf("createRuntime hooks = %+v, want one", hooks)
	}
	args := strings.Join(hooks[0].Args, " ")
	for _, want := range []string{"--volume default/owned=/owned", "--keep-owner default/owned", "--chown default/mine"} {
		if !strings.Contains(args, want) {
			t.Errorf("hook args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "default/mine=") {
		t.Errorf("hook copies up a nocopy volume: %q", args)
	}
	if _, err := rt.store().CopyUps().ChownRoot("default", "mine", 1, 1); err != nil {
		t.Fatal(err)
	}
	// Chowned already and no copy-up due: no hook at all.
	adj, err = rt.create(newPod("p2", "default", map[string]string{plugin.VolumesKey: "- mine:/mine:U,nocopy"}), newContainer("c2", "p2", "app"))
	if err != nil {
		t.Fatal(err)
	}
	if hooks := adj.GetHooks().GetCreateRuntime(); len(hooks) != 0 {
		t.Errorf("hooks for a volume chowned before: %+v", hooks)
	}
}

// TestChownWithSubpathRefused: chown on a subpath mount would give the
// volume's root, which the container does not see, to its user and record
// the volume as chowned, while the directory it sees keeps its owner. The
// plugin refuses it, naming the key and the item, and leaves nothing behind.
func TestChownWithSubpathRefused(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	v, err := rt.store().Create("default", "data", volumes.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(v.Mountpoint, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	ann := map[string]string{plugin.VolumesKey: "- {source: data, target: /d, subpath: a, chown: true}"}
	_, err = rt.create(newPod("p1", "default", ann), newContainer("c1", "p1", "app"))
	if err == nil || !strings.Contains(err.Error(), plugin.VolumesKey) || !strings.Contains(err.Error(), `target "/d"`) ||
		!strings.Contains(err.Error(), `chown with subpath "a"`) {
		t.Fatalf("chown with a subpath = %v, want a refusal naming the key, the item and chown with subpath", err)
	}
	got, err := rt.store().Get("default", "data")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.UsedBy) > 0 || got.Chowned != nil {
		t.Errorf("after the refusal volume data is used by %v, chowned %v", got.UsedBy, got.Chowned)
	}
}

// TestUserNamespaceBindOutsideAllowlistRefused: a bind source outside
// bindMounts.allowedHostPaths of a container with a user namespace is
// refused by the allowlist before the idmap check looks at it, so the error
// never tells the pod whether the path exists or what file system it is on.
func TestUserNamespaceBindOutsideAllowlistRefused(t *testing.T) {
	allowed := t.TempDir()
	rt := newRuntime(t, func(c *config.Config) { c.BindMounts.AllowedHostPaths = []string{allowed} })
	rt.connect()
	for _, src := range []string{"/nonexistent-review-secret", "/root"} {
		ann := map[string]string{plugin.VolumesKey: "- " + src + ":/x"}
		_, err := rt.create(newPod("p1", "default", ann), usernsContainer("c1", "p1", podUserNS(t)))
		if err == nil || !strings.Contains(err.Error(), "allowedHostPaths") {
			t.Errorf("bind of %s outside the allowlist in a userns container = %v, want a refusal naming allowedHostPaths", src, err)
		}
	}
}
