package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// KubeletNodeName is the node name of every kubelet the harness starts; the
// kubelet names a static pod NAME-KubeletNodeName.
const KubeletNodeName = "nrivol-e2e"

// Kubelet is a standalone kubelet (no API server: static pods from a
// manifest directory) driving one Containerd over CRI, as a node's kubelet
// does. Its root, certificate, manifest and log directories live under Dir.
//
// It runs in a mount namespace of its own, for two things a kubelet does to
// its node that a test must not do to the machine it runs on: it sets
// kernel tunables (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops,
// ...), so those /proc/sys files are shadowed there by files that already
// hold the values it wants; and it links every container's log into
// /var/log/containers, so /var/log is shadowed by a directory under Dir.
// Mounts in that namespace are private: a volume the kubelet mounts itself
// (an emptyDir on tmpfs, a secret) would not reach containerd, and the tests
// use none; everything nri-volumes does happens in containerd's namespace.
type Kubelet struct {
	Bin string
	Ctd *Containerd
	// Dir holds everything below.
	Dir, RootDir, CertDir, ManifestDir, PodLogsDir, ConfigPath, LogPath string
	// HealthzPort serves /healthz on 127.0.0.1.
	HealthzPort int

	t    TB
	proc *process
}

// kernelTunables are the sysctls the kubelet sets at start unless they
// already hold these values (setupKernelTunables in its container manager).
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// StartKubelet starts the kubelet of the runtime cache (Bins.Kubelet)
// against ctd's CRI socket and waits until its health check answers. It is
// stopped by a cleanup on t, before ctd is: pods it started are left to
// containerd's teardown.
func StartKubelet(t TB, ctd *Containerd) *Kubelet {
	t.Helper()
	if _, err := os.Stat(ctd.Bins.Kubelet); err != nil {
		t.Fatalf("kubelet: %v (hack/install-runtime.sh builds it)", err)
	}
	dir := tempDir(t, "kubelet")
	k := &Kubelet{
		Bin:         ctd.Bins.Kubelet,
		Ctd:         ctd,
		Dir:         dir,
		RootDir:     filepath.Join(dir, "root"),
		CertDir:     filepath.Join(dir, "pki"),
		ManifestDir: filepath.Join(dir, "manifests"),
		PodLogsDir:  filepath.Join(dir, "pod-logs"),
		ConfigPath:  filepath.Join(dir, "config.yaml"),
		LogPath:     filepath.Join(dir, "kubelet.log"),
		HealthzPort: freePort(t),
		t:           t,
	}
	for _, d := range []string{k.RootDir, k.CertDir, k.ManifestDir, k.PodLogsDir, k.varLogDir(), k.sysctlDir(), k.volumePluginDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
	}
	for name, value := range kernelTunables {
		if err := os.WriteFile(k.sysctlFile(name), []byte(value+"\n"), 0o644); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if err := os.WriteFile(k.ConfigPath, []byte(k.config(freePort(t))), 0o644); err != nil {
		t.Fatalf("write kubelet config: %v", err)
	}
	t.Cleanup(func() {
		if f, ok := t.(interface{ Failed() bool }); ok && f.Failed() {
			t.Logf("kubelet log (last lines):\n%s", k.LogTail(80))
		}
		k.stop()
	})
	k.launch(t)
	return k
}

func (k *Kubelet) varLogDir() string       { return filepath.Join(k.Dir, "var-log") }
func (k *Kubelet) sysctlDir() string       { return filepath.Join(k.Dir, "sysctl") }
func (k *Kubelet) volumePluginDir() string { return filepath.Join(k.Dir, "volume-plugins") }
func (k *Kubelet) sysctlFile(n string) string {
	return filepath.Join(k.sysctlDir(), strings.ReplaceAll(n, "/", "."))
}

// config returns the KubeletConfiguration. Settings that matter here:
// cgroupfs with no QoS cgroups and no node allocatable enforcement, since
// containerd uses cgroupfs and these machines are cgroup v1 (hybrid);
// swap and cgroup v1 tolerated; image GC off, so the imported test images
// stay; eviction thresholds low, so a full disk elsewhere evicts nothing;
// the manifest directory read every second.
func (k *Kubelet) config(port int) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %s
staticPodPath: %s
podLogsDir: %s
volumePluginDir: %s
fileCheckFrequency: 1s
syncFrequency: 5s
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
resolvConf: ""
`, q("unix://"+k.Ctd.Address), q(k.ManifestDir), q(k.PodLogsDir), q(k.volumePluginDir()), port, k.HealthzPort)
}

// launch starts the kubelet in its own mount namespace (see Kubelet) and
// waits up to 60s for its health check.
func (k *Kubelet) launch(t TB) {
	t.Helper()
	var script strings.Builder
	script.WriteString("set -e\n")
	for name := range kernelTunables {
		fmt.Fprintf(&script, "mount --bind %s /proc/sys/%s\n", k.sysctlFile(name), name)
	}
	fmt.Fprintf(&script, "mount --bind %s /var/log\n", k.varLogDir())
	script.WriteString(`exec "$@"` + "\n")
	args := []string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script.String(), "kubelet",
		k.Bin,
		"--config", k.ConfigPath,
		"--root-dir", k.RootDir,
		"--cert-dir", k.CertDir,
		"--hostname-override", KubeletNodeName,
		"--v", "2",
	}
	// unshare and sh exec, so the PID is the kubelet's.
	cmd := exec.Command("unshare", args...)
	k.proc = startProcess(t, "kubelet", cmd, k.LogPath)
	done := k.proc.done

	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", k.HealthzPort)
	client := &http.Client{Timeout: 2 * time.Second}
	ready := waitFor(60*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case <-done:
		t.Fatalf("kubelet exited at start (%v); its log:\n%s", cmd.ProcessState, k.LogTail(60))
	default:
	}
	if !ready {
		t.Fatalf("kubelet's %s did not answer within 60s; its log:\n%s", url, k.LogTail(60))
	}
	t.Logf("kubelet pid %d, root dir %s", cmd.Process.Pid, k.RootDir)
}

// stop ends the kubelet by its PID: SIGTERM, then SIGKILL after 15s. Its
// mount namespace, and the mounts in it, go with it.
func (k *Kubelet) stop() {
	k.proc.stop(15 * time.Second)
}

// Running reports whether the kubelet process is alive.
func (k *Kubelet) Running() bool {
	return k.proc.running()
}

// LogTail returns the last n lines of the kubelet's log.
func (k *Kubelet) LogTail(n int) string {
	return tailFile(k.LogPath, n)
}

// AddStaticPod writes a pod manifest (YAML or JSON) into the manifest
// directory as NAME.yaml; the kubelet starts the pod, named
// NAME-KubeletNodeName on the runtime. The file is written aside and renamed
// in, so the kubelet never reads half of it.
func (k *Kubelet) AddStaticPod(t TB, name, manifest string) {
	t.Helper()
	tmp := filepath.Join(k.Dir, name+".yaml.tmp")
	if err := os.WriteFile(tmp, []byte(manifest), 0o644); err != nil {
		t.Fatalf("write manifest %s: %v", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(k.ManifestDir, name+".yaml")); err != nil {
		t.Fatalf("add manifest %s: %v", name, err)
	}
}

// RemoveStaticPod removes the manifest NAME.yaml; the kubelet stops the pod
// and, at its next container garbage collection (once a minute), removes
// its sandbox.
func (k *Kubelet) RemoveStaticPod(t TB, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(k.ManifestDir, name+".yaml")); err != nil {
		t.Fatalf("remove manifest %s: %v", name, err)
	}
}

// StaticPodName is the name the kubelet gives the static pod of a manifest
// whose metadata.name is name.
func StaticPodName(name string) string {
	return name + "-" + KubeletNodeName
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// PodSandbox is a pod sandbox as crictl pods lists it.
type PodSandbox struct {
	ID    string
	State string // SANDBOX_READY or SANDBOX_NOTREADY
}

// PodsNamed lists the pod sandboxes named name, in any state.
func (c *Crictl) PodsNamed(name string) ([]PodSandbox, error) {
	res := c.Run("pods", "--name", "^"+name+"$", "-o", "json")
	if res.Err != nil {
		return nil, res.Err
	}
	var out struct {
		Items []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		return nil, fmt.Errorf("parse crictl pods: %w", err)
	}
	pods := make([]PodSandbox, 0, len(out.Items))
	for _, it := range out.Items {
		pods = append(pods, PodSandbox{ID: it.ID, State: it.State})
	}
	return pods, nil
}

// ContainerStatus is a container as crictl ps lists it.
type ContainerStatus struct {
	ID, Name string
	Attempt  uint32
	State    string // CONTAINER_RUNNING, CONTAINER_EXITED, ...
}

// ContainersIn lists the containers of a pod sandbox, in any state.
func (c *Crictl) ContainersIn(podID string) ([]ContainerStatus, error) {
	res := c.Run("ps", "-a", "--pod", podID, "-o", "json")
	if res.Err != nil {
		return nil, res.Err
	}
	var out struct {
		Containers []struct {
			ID       string `json:"id"`
			Metadata struct {
				Name    string `json:"name"`
				Attempt uint32 `json:"attempt"`
			} `json:"metadata"`
			State string `json:"state"`
		} `json:"containers"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		return nil, fmt.Errorf("parse crictl ps: %w", err)
	}
	ctrs := make([]ContainerStatus, 0, len(out.Containers))
	for _, c := range out.Containers {
		ctrs = append(ctrs, ContainerStatus{ID: c.ID, Name: c.Metadata.Name, Attempt: c.Metadata.Attempt, State: c.State})
	}
	return ctrs, nil
}

// InspectPod returns crictl's inspectp output for a pod sandbox.
func (c *Crictl) InspectPod(id string) map[string]any {
	c.t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(c.must("inspectp", "--output", "json", id)), &v); err != nil {
		c.t.Fatalf("parse crictl inspectp: %v", err)
	}
	return v
}
