package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// userImage runs as uid 1234, gid 1234, as an image's USER line makes it.
var userImage = harness.Image{Name: "localhost/user:e2e", Entrypoint: []string{"/bin/sleep", "2147483647"}, User: "1234:1234"}

// TestVolumeOwnership checks the owner and mode of new volumes: from volume
// create -o, from the long syntax on first use, and from U, which gives the
// volume's root to the container's user once, in a pod with a user namespace
// as in one without.
func TestVolumeOwnership(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.ctd.Import(t, userImage)
	e.volume("create", "-o", "uid=1000", "--opt", "gid=1001", "-o", "mode=0770", "made")
	if res := e.plugin.Volume("create", "-o", "owner=1000", "bad"); res.Err == nil || !strings.Contains(res.Stderr, `"owner"`) {
		t.Errorf("volume create -o owner=1000: %v, stderr %q; want an error naming owner", res.Err, res.Stderr)
	}

	pod := e.cr.RunPod("owners", "default", "uid-owners", map[string]string{podKey: "- made:/made\n" +
		"- {source: first-use, target: /first-use, uid: 2000, gid: 2001, mode: '0750'}\n- mine:/mine:U"})
	id := e.cr.RunContainer(pod, "app", userImage.Name, nil, nil)
	want := "1000:1001 770\n2000:2001 750\n1234:1234 755"
	if got := trim(e.cr.Exec(id, "stat", "-c", "%u:%g %a", "/made", "/first-use", "/mine")); got != want {
		t.Errorf("inside, /made /first-use /mine are\n%s\nwant\n%s", got, want)
	}
	if got := hostOwner(t, e.plugin.VolumeDir("default", "made")); got != "1000:1001 770" {
		t.Errorf("on the host the volume made with -o is %s", got)
	}
	e.cr.Sh(id, "echo mine > /mine/file")
	var inspect []struct{ Chowned *struct{ UID, GID int } }
	if err := json.Unmarshal([]byte(e.volume("inspect", "mine")), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("volume inspect mine: %v", err)
	}
	if c := inspect[0].Chowned; c == nil || c.UID != 1234 || c.GID != 1234 {
		t.Errorf("volume inspect mine shows Chowned = %+v, want 1234:1234", c)
	}

	// Another container with U, as root: the chown happened once.
	other := e.cr.RunPod("owners-2", "default", "uid-owners-2", map[string]string{podKey: "- mine:/mine:U"})
	root := e.cr.RunContainer(other, "app", appImage, nil, nil)
	if got := trim(e.cr.Exec(root, "stat", "-c", "%u:%g", "/mine")); got != "1234:1234" {
		t.Errorf("a second container with U made /mine %s, want it left 1234:1234", got)
	}

	// In a pod with a user namespace, U writes the ids the container sees.
	userns := e.cr.RunPodSpec(harness.PodSpec{Name: "owners-userns", Namespace: "default", UID: "uid-owners-userns",
		UserNS:      &harness.UserNS{HostID: 65536, Size: 65536},
		Annotations: map[string]string{podKey: "- userns-mine:/mine:U"}})
	uid := e.cr.RunContainer(userns, "app", userImage.Name, nil, nil)
	e.cr.Sh(uid, "echo mine > /mine/file")
	if got := hostOwner(t, e.plugin.VolumeDir("default", "userns-mine")); got != "1234:1234 755" {
		t.Errorf("on the host a volume chowned in a user namespace is %s, want 1234:1234 755", got)
	}
}

// TestNoExec checks that a program copied into a noexec volume or tmpfs
// cannot run, and that exec (the default) leaves it runnable.
func TestNoExec(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("noexec", "default", "uid-noexec", map[string]string{podKey: "- scripts:/noexec:noexec\n" +
		"- {type: tmpfs, target: /tmp-noexec, noExec: true}\n- {source: tools, target: /exec}\n- other:/exec-opt:rw,exec"})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	// busybox picks its applet by the name it runs under.
	for _, dir := range []string{"/noexec", "/tmp-noexec"} {
		e.cr.Sh(id, "cp /bin/busybox "+dir+"/echo")
		out, err := e.cr.ExecErr(id, dir+"/echo", "ran")
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "permission denied") {
			t.Errorf("a binary in %s: %q, %v; want permission denied", dir, out, err)
		}
		if line := mountLine(t, e.cr.Exec(id, "cat", "/proc/mounts"), dir); !strings.Contains(line, "noexec") || !strings.Contains(line, "nosuid") {
			t.Errorf("%s is mounted %q, want noexec and nosuid", dir, line)
		}
	}
	for _, dir := range []string{"/exec", "/exec-opt"} {
		e.cr.Sh(id, "cp /bin/busybox "+dir+"/echo")
		if out, err := e.cr.ExecErr(id, dir+"/echo", "ran"); err != nil || out != "ran\n" {
			t.Errorf("a binary in %s did not run: %q, %v", dir, out, err)
		}
	}
}

// TestUserNamespaceRefusedWithoutIDMap puts the store on ramfs, which cannot
// be idmapped: a container with a user namespace is refused with a message
// that says so, and nothing is made for it; one without runs.
func TestUserNamespaceRefusedWithoutIDMap(t *testing.T) {
	root := t.TempDir()
	if err := unix.Mount("ramfs", root, "ramfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount ramfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{Root: filepath.Join(root, "store")})
	ann := map[string]string{podKey: "- data:/data\n- {type: tmpfs, target: /run/secrets}"}

	pod := e.cr.RunPodSpec(harness.PodSpec{Name: "refused", Namespace: "default", UID: "uid-refused",
		UserNS: &harness.UserNS{HostID: 65536, Size: 65536}, Annotations: ann})
	_, err := e.cr.CreateContainer(pod, "app", appImage, nil, nil)
	if err == nil {
		t.Fatal("a container with a user namespace was created on a store that cannot be idmapped")
	}
	for _, want := range []string{"ramfs", "cannot be idmapped", "/data"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if vols := storeVolumes(t, e.plugin.Root); len(vols) != 0 {
		t.Errorf("the refused container left volumes: %v", vols)
	}

	plain := e.cr.RunPod("plain", "default", "uid-plain", ann)
	id := e.cr.RunContainer(plain, "app", appImage, nil, nil)
	e.cr.Sh(id, "echo ok > /data/ok")
	if _, err := os.Stat(filepath.Join(e.plugin.VolumeDir("default", "data"), "ok")); err != nil {
		t.Errorf("a pod without a user namespace could not use the volume: %v", err)
	}
}
