package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestNamedVolume follows a named volume through two pods: what the first
// writes, the host and the second pod see; the CLI lists it and refuses to
// remove it while a container uses it.
func TestNamedVolume(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.volume("create", "redis-data")
	dataDir := e.plugin.VolumeDir("default", "redis-data")
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		t.Fatalf("volume create made no %s: %v", dataDir, err)
	}

	ann := map[string]string{podKey: "- redis-data:/data"}
	pod1 := e.cr.RunPod("redis-1", "default", "uid-redis-1", ann)
	writer := e.cr.RunContainer(pod1, "redis", appImage, nil, nil)
	e.cr.Sh(writer, "echo 'SET k v' > /data/dump.rdb")

	res := e.plugin.Volume("rm", "redis-data")
	if res.Err == nil {
		t.Fatalf("volume rm of a volume in use succeeded")
	}
	if !strings.Contains(res.Stderr, writer[:12]) {
		t.Errorf("volume rm error does not name the container %s: %q", writer[:12], res.Stderr)
	}

	ls := e.volume("ls")
	for _, want := range []string{"VOLUME NAME", "DIRECTORY", "redis-data"} {
		if !strings.Contains(ls, want) {
			t.Errorf("volume ls output lacks %q:\n%s", want, ls)
		}
	}

	e.cr.RmPod(pod1)
	got, err := os.ReadFile(filepath.Join(dataDir, "dump.rdb"))
	if err != nil || string(got) != "SET k v\n" {
		t.Fatalf("host file after the pod is gone = %q, %v", got, err)
	}

	pod2 := e.cr.RunPod("redis-2", "default", "uid-redis-2", ann)
	reader := e.cr.RunContainer(pod2, "redis", appImage, nil, nil)
	if got := e.cr.Exec(reader, "cat", "/data/dump.rdb"); got != "SET k v\n" {
		t.Errorf("second pod reads %q", got)
	}
	e.cr.RmPod(pod2)

	e.volume("rm", "redis-data")
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("after volume rm, %s: %v", dataDir, err)
	}
}

// TestNamedVolumeNamespaces checks that a name means one volume per
// Kubernetes namespace, created on first use.
func TestNamedVolumeNamespaces(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	ann := map[string]string{podKey: "- cache:/cache"}
	podA := e.cr.RunPod("a", "default", "uid-a", ann)
	podB := e.cr.RunPod("b", "shop", "uid-b", ann)
	a := e.cr.RunContainer(podA, "app", appImage, nil, nil)
	b := e.cr.RunContainer(podB, "app", appImage, nil, nil)
	e.cr.Sh(a, "echo default > /cache/who")
	e.cr.Sh(b, "echo shop > /cache/who")
	for ns, want := range map[string]string{"default": "default\n", "shop": "shop\n"} {
		got, err := os.ReadFile(filepath.Join(e.plugin.VolumeDir(ns, "cache"), "who"))
		if err != nil || string(got) != want {
			t.Errorf("namespace %s: who = %q, %v", ns, got, err)
		}
	}
	if out := e.volume("ls", "-n", "shop", "-q"); trim(out) != "cache" {
		t.Errorf("volume ls -n shop -q = %q", out)
	}
}

// TestTmpfs checks that an annotation tmpfs is mounted with its size.
func TestTmpfs(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("tmpfs", "default", "uid-tmpfs", map[string]string{
		podKey: "- {type: tmpfs, target: /run/secrets, size: 16Mi}",
	})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	line := mountLine(t, e.cr.Exec(id, "cat", "/proc/mounts"), "/run/secrets")
	if !strings.HasPrefix(line, "tmpfs ") || !strings.Contains(line, " tmpfs ") || !strings.Contains(line, "size=16384k") {
		t.Errorf("/run/secrets mount = %q, want a tmpfs with size=16384k", line)
	}
	df := e.cr.Exec(id, "df", "-k", "/run/secrets")
	if !strings.Contains(df, "16384") {
		t.Errorf("df -k /run/secrets:\n%s", df)
	}
	e.cr.Sh(id, "echo s3cret > /run/secrets/token")
	if vols := storeVolumes(t, e.plugin.Root); len(vols) != 0 {
		t.Errorf("a tmpfs made volumes in the store: %v", vols)
	}
}

// TestBindMount checks that an allowed host path hides what the image has at
// the target, and that one outside allowedHostPaths fails the creation.
func TestBindMount(t *testing.T) {
	hostDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(hostDir, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "conf", "app.conf"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{AllowedHostPaths: []string{hostDir}})
	e.ctd.Import(t, harness.Image{
		Name:       "localhost/conf:e2e",
		Entrypoint: []string{"/bin/sleep", "2147483647"},
		Files: []harness.File{
			harness.RegularFile("/etc/app/app.conf", "from image\n", 0o644, 0, 0),
			harness.RegularFile("/etc/app/image-only", "x\n", 0o644, 0, 0),
		},
	})

	pod := e.cr.RunPod("bind", "default", "uid-bind", map[string]string{
		podKey: "- " + filepath.Join(hostDir, "conf") + ":/etc/app",
	})
	id := e.cr.RunContainer(pod, "app", "localhost/conf:e2e", nil, nil)
	if got := e.cr.Exec(id, "cat", "/etc/app/app.conf"); got != "from host\n" {
		t.Errorf("/etc/app/app.conf = %q, want the host's", got)
	}
	if out, err := e.cr.ExecErr(id, "ls", "/etc/app/image-only"); err == nil {
		t.Errorf("the image's /etc/app/image-only shows through the bind mount: %q", out)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "conf", "later"), []byte("changed on the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := e.cr.Exec(id, "cat", "/etc/app/later"); got != "changed on the host\n" {
		t.Errorf("a file the host adds later reads %q in the container", got)
	}

	t.Run("outside allowedHostPaths", func(t *testing.T) {
		pod := e.cr.RunPod("bind-denied", "default", "uid-bind-denied", map[string]string{
			podKey: "- /etc:/host-etc",
		})
		_, err := e.cr.CreateContainer(pod, "app", appImage, nil, nil)
		if err == nil {
			t.Fatalf("container with a bind mount of /etc was created")
		}
		if !strings.Contains(err.Error(), podKey) {
			t.Errorf("error does not name %s: %v", podKey, err)
		}
	})
}

// TestImageVolume checks an image VOLUME: an anonymous volume with the
// image's content and owner, kept across a container restart in the pod,
// gone with the pod. It runs with containerd's own image-volume handling on
// and off.
func TestImageVolume(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ignore bool
	}{
		{"containerd image volumes on", false},
		{"containerd image volumes ignored", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, harness.ContainerdOptions{IgnoreImageDefinedVolumes: tc.ignore}, harness.PluginConfig{})
			e.ctd.Import(t, dbImage)
			pod := e.cr.RunPod("db", "default", "uid-db", nil)
			spec := harness.ContainerSpec{Name: "db", Image: dbImage.Name}
			id, err := e.cr.CreateContainerSpec(pod, spec)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			e.cr.Start(id)
			// With containerd's image volumes on, containerd has copied
			// the image's /data already, and the volume takes that copy
			// over instead of copying again in the hook.
			if hooks := createRuntimeHooks(e.cr, id); tc.ignore != (len(hooks) == 1) {
				t.Errorf("createRuntime hooks %v: want the copy-up hook only when containerd's image volumes are off", hooks)
			}

			if got := e.cr.Exec(id, "cat", "/data/seed.txt"); got != "seeded by the image\n" {
				t.Errorf("/data/seed.txt = %q", got)
			}
			if got := trim(e.cr.Exec(id, "stat", "-c", "%u:%g %a", "/data", "/data/seed.txt")); got != "999:999 750\n999:999 640" {
				t.Errorf("stat /data /data/seed.txt = %q, want 999:999 750 and 999:999 640", got)
			}
			e.cr.Sh(id, "echo kept > /data/written.txt")
			anon := e.anonymousVolumes("default")
			if len(anon) != 1 {
				t.Fatalf("anonymous volumes in default: %v, want one", anon)
			}
			if src := e.cr.Mounts(id)["/data"]; !strings.HasPrefix(src, filepath.Join(e.plugin.Root, "volumes", "default", anon[0])) {
				t.Errorf("/data is mounted from %q, not from the anonymous volume %s", src, anon[0])
			}

			e.cr.Stop(id)
			e.cr.Rm(id)
			spec.Attempt = 1
			id, err = e.cr.CreateContainerSpec(pod, spec)
			if err != nil {
				t.Fatalf("re-create: %v", err)
			}
			e.cr.Start(id)
			if got := e.cr.Exec(id, "cat", "/data/written.txt"); got != "kept\n" {
				t.Errorf("after the restart /data/written.txt = %q", got)
			}
			if again := e.anonymousVolumes("default"); len(again) != 1 || again[0] != anon[0] {
				t.Errorf("after the restart anonymous volumes = %v, want %v", again, anon)
			}

			e.cr.RmPod(pod)
			if !eventually(func() bool { return len(e.anonymousVolumes("default")) == 0 }) {
				t.Errorf("anonymous volumes left after the pod was removed: %v", e.anonymousVolumes("default"))
			}
		})
	}
}

// createRuntimeHooks are the paths of the container's createRuntime hooks,
// from its OCI spec as the runtime reports it.
func createRuntimeHooks(cr *harness.Crictl, id string) []string {
	var paths []string
	for _, hm := range createRuntimeHookSpecs(cr, id) {
		p, _ := hm["path"].(string)
		paths = append(paths, p)
	}
	return paths
}

// createRuntimeHookSpecs are the container's createRuntime hooks as the
// runtime reports its OCI spec, one JSON object each.
func createRuntimeHookSpecs(cr *harness.Crictl, id string) []map[string]any {
	info, _ := cr.Inspect(id)["info"].(map[string]any)
	spec, _ := info["runtimeSpec"].(map[string]any)
	hooks, _ := spec["hooks"].(map[string]any)
	createRuntime, _ := hooks["createRuntime"].([]any)
	var out []map[string]any
	for _, h := range createRuntime {
		hm, _ := h.(map[string]any)
		out = append(out, hm)
	}
	return out
}

// dbImage declares VOLUME /data over a directory with content, owned by 999.
var dbImage = harness.Image{
	Name:       "localhost/db:e2e",
	Entrypoint: []string{"/bin/sleep", "2147483647"},
	Volumes:    []string{"/data"},
	Files: []harness.File{
		harness.Directory("/data", 0o750, 999, 999),
		harness.RegularFile("/data/seed.txt", "seeded by the image\n", 0o640, 999, 999),
	},
}

// TestBadAnnotation checks that bad input fails the creation with a message
// that names the key and the item, and leaves nothing in the store.
func TestBadAnnotation(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{TmpfsMaxSize: "64Mi"})
	for _, tc := range []struct {
		name, value, item string
	}{
		{"path escape", "- ../../etc:/x", "../../etc"},
		{"relative target", "- data:relative/dir", "relative/dir"},
		{"duplicate target", "- a:/same\n- b:/same", "/same"},
		{"invalid name", "- 'bad name!:/x'", "bad name!"},
		{"tmpfs above maxSize", "- {type: tmpfs, target: /big, size: 1Gi}", "/big"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid := "uid-bad-" + strings.ReplaceAll(tc.name, " ", "-")
			pod := e.cr.RunPod(strings.ReplaceAll(tc.name, " ", "-"), "default", uid, map[string]string{podKey: tc.value})
			_, err := e.cr.CreateContainer(pod, "app", appImage, nil, nil)
			if err == nil {
				t.Fatalf("container with %s = %q was created", podKey, tc.value)
			}
			for _, want := range []string{"volumes.noderesource.dev", tc.item} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q: %v", want, err)
				}
			}
			if vols := storeVolumes(t, e.plugin.Root); len(vols) != 0 {
				t.Errorf("store after a failed creation: %v", vols)
			}
			e.cr.RmPod(pod)
		})
	}
}
