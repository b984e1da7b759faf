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

// kvImage has an image VOLUME with content, for copy-up.
const kvImage = "localhost/kv:e2e"

// kvManifest is a static pod with a named volume and a tmpfs from its
// annotations and the anonymous volume of kvImage's VOLUME. Its container
// writes token into both volumes and exits the first time; once it finds
// its mark in the anonymous volume it sleeps.
func kvManifest(token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: kv
  namespace: default
  annotations:
    volumes.noderesource.dev/pod: |
      - kv-config:/etc/kv
      - {type: tmpfs, target: /run/kv, size: 8Mi}
spec:
  hostNetwork: true
  restartPolicy: Always
  terminationGracePeriodSeconds: 1
  containers:
  - name: kv
    image: %s
    imagePullPolicy: Never
    env:
    - {name: TOKEN, value: %q}
    command:
    - sh
    - -c
    - |
      if [ -e /var/lib/kv/first ]; then exec sleep 2147483647; fi
      echo "$TOKEN" > /var/lib/kv/first
      echo "$TOKEN" > /etc/kv/written-by
      exit 3
`, kvImage, token)
}

// TestKubeletStaticPod runs a pod through a real kubelet instead of crictl:
// the volumes come from the static pod's annotations and its image, the
// kubelet restarts the container after it exits and the new container finds
// what the first one wrote into the anonymous volume; when the manifest goes,
// the kubelet stops the pod and later removes its sandbox, which takes the
// anonymous volume with it while the named one stays.
func TestKubeletStaticPod(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.ctd.Import(t, harness.Image{
		Name:       kvImage,
		Volumes:    []string{"/var/lib/kv"},
		Files:      []harness.File{harness.RegularFile("/var/lib/kv/seed", "from image\n", 0o644, 0, 0)},
		Entrypoint: []string{"/bin/sleep", "2147483647"},
	})
	kl := harness.StartKubelet(t, e.ctd)
	token := fmt.Sprintf("token-%d", time.Now().UnixNano())
	kl.AddStaticPod(t, "kv", kvManifest(token))

	podID := readyPod(t, e.cr, harness.StaticPodName("kv"))
	second := runningContainer(t, e.cr, podID, "kv", 1)
	ctrs, err := e.cr.ContainersIn(podID)
	if err != nil {
		t.Fatal(err)
	}
	var first *harness.ContainerStatus
	for i, c := range ctrs {
		if c.Name == "kv" && c.Attempt == 0 {
			first = &ctrs[i]
		}
	}
	if first == nil || first.ID == second.ID || first.State != "CONTAINER_EXITED" {
		t.Fatalf("want an exited first container beside the restarted one, the pod has %+v", ctrs)
	}

	if got := e.cr.Exec(second.ID, "cat", "/var/lib/kv/first"); trim(got) != token {
		t.Errorf("the restarted container reads %q from the anonymous volume, the first wrote %q", got, token)
	}
	if got := e.cr.Exec(second.ID, "cat", "/var/lib/kv/seed"); got != "from image\n" {
		t.Errorf("the image's /var/lib/kv/seed was not copied up: %q", got)
	}
	line := mountLine(t, e.cr.Exec(second.ID, "cat", "/proc/mounts"), "/run/kv")
	if !strings.HasPrefix(line, "tmpfs ") || !strings.Contains(line, "size=8192k") {
		t.Errorf("/run/kv mount = %q, want a tmpfs with size=8192k", line)
	}
	anon := e.anonymousVolumes("default")
	if len(anon) != 1 {
		t.Fatalf("anonymous volumes in default = %v, want the one of /var/lib/kv, kept across the restart", anon)
	}
	if got := e.cr.Mounts(second.ID)["/var/lib/kv"]; got != e.plugin.VolumeDir("default", anon[0]) {
		t.Errorf("/var/lib/kv is mounted from %q, want the anonymous volume %s", got, anon[0])
	}
	named := filepath.Join(e.plugin.VolumeDir("default", "kv-config"), "written-by")
	if got, err := os.ReadFile(named); err != nil || trim(string(got)) != token {
		t.Errorf("named volume kv-config: written-by = %q, %v", got, err)
	}

	kl.RemoveStaticPod(t, "kv")
	// The kubelet stops the pod at once but removes its sandbox only at its
	// next container garbage collection, which runs once a minute.
	if !within(3*time.Minute, func() bool {
		pods, err := e.cr.PodsNamed(harness.StaticPodName("kv"))
		return err == nil && len(pods) == 0
	}) {
		pods, _ := e.cr.PodsNamed(harness.StaticPodName("kv"))
		t.Fatalf("the kubelet did not remove the sandbox of the removed static pod: %+v", pods)
	}
	if !eventually(func() bool { return len(e.anonymousVolumes("default")) == 0 }) {
		t.Errorf("anonymous volumes left after the kubelet removed the pod: %v", e.anonymousVolumes("default"))
	}
	if got, err := os.ReadFile(named); err != nil || trim(string(got)) != token {
		t.Errorf("named volume kv-config after the pod: written-by = %q, %v", got, err)
	}
	if out := e.volume("ls", "-q"); trim(out) != "kv-config" {
		t.Errorf("volume ls -q after the pod = %q, want only kv-config", out)
	}
}

// TestKubeletSeccompRuntimeDefault checks that a pod asking for the
// runtime's default seccomp profile starts, and runs confined: the kubelet
// asks for that profile for every sandbox, and runc must apply it.
func TestKubeletSeccompRuntimeDefault(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	kl := harness.StartKubelet(t, e.ctd)
	kl.AddStaticPod(t, "confined", fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: confined
  annotations:
    volumes.noderesource.dev/pod: "- confined-data:/data"
spec:
  hostNetwork: true
  securityContext:
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
`, appImage))

	podID := readyPod(t, e.cr, harness.StaticPodName("confined"))
	app := runningContainer(t, e.cr, podID, "app", 0)
	status := e.cr.Exec(app.ID, "cat", "/proc/self/status")
	if !strings.Contains(status, "Seccomp:\t2") {
		t.Errorf("the container runs without a seccomp filter; /proc/self/status:\n%s", status)
	}
	info, _ := e.cr.InspectPod(podID)["info"].(map[string]any)
	spec, _ := info["runtimeSpec"].(map[string]any)
	linux, _ := spec["linux"].(map[string]any)
	if linux["seccomp"] == nil {
		t.Errorf("the sandbox's runtime spec has no seccomp profile: %v", linux)
	}
	e.cr.Sh(app.ID, "echo confined > /data/ok")
	if got, err := os.ReadFile(filepath.Join(e.plugin.VolumeDir("default", "confined-data"), "ok")); err != nil || string(got) != "confined\n" {
		t.Errorf("named volume confined-data: ok = %q, %v", got, err)
	}
}

// readyPod waits up to a minute for the kubelet to start the pod sandbox
// name and returns its ID.
func readyPod(t *testing.T, cr *harness.Crictl, name string) string {
	t.Helper()
	var id string
	if !within(time.Minute, func() bool {
		pods, err := cr.PodsNamed(name)
		for _, p := range pods {
			if err == nil && p.State == "SANDBOX_READY" {
				id = p.ID
			}
		}
		return id != ""
	}) {
		pods, err := cr.PodsNamed(name)
		t.Fatalf("the kubelet started no pod %s within a minute: %+v, %v", name, pods, err)
	}
	return id
}

// runningContainer waits up to a minute for a running container name, of
// at least the given attempt (restart count), in the pod sandbox podID.
func runningContainer(t *testing.T, cr *harness.Crictl, podID, name string, attempt uint32) harness.ContainerStatus {
	t.Helper()
	var found harness.ContainerStatus
	if !within(time.Minute, func() bool {
		ctrs, err := cr.ContainersIn(podID)
		for _, c := range ctrs {
			if err == nil && c.Name == name && c.Attempt >= attempt && c.State == "CONTAINER_RUNNING" {
				found = c
				return true
			}
		}
		return false
	}) {
		ctrs, err := cr.ContainersIn(podID)
		t.Fatalf("no running container %s of attempt %d or later within a minute: %+v, %v", name, attempt, ctrs, err)
	}
	return found
}

// within polls cond every 200ms for up to d.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}
