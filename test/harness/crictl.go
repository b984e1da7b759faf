package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Crictl runs crictl against one containerd. Its helpers that return no
// error fail the test on one; those that return an error leave judging it
// to the caller.
type Crictl struct {
	t        TB
	bin      string
	endpoint string
	dir      string
}

// Pod is a pod sandbox that RunPod started.
type Pod struct {
	ID, Name, Namespace, UID string
	configPath               string
	userns                   *UserNS
}

// Mount is a CRI mount of a host path.
type Mount struct {
	HostPath      string
	ContainerPath string
	Readonly      bool
	// Propagation is Kubernetes' mountPropagation: "" or None,
	// HostToContainer, Bidirectional.
	Propagation string
}

// criPropagation is the CRI enum of a Kubernetes mountPropagation.
var criPropagation = map[string]int{"": 0, "None": 0, "HostToContainer": 1, "Bidirectional": 2}

// ContainerSpec is what CreateContainerSpec sends; empty Command and Args
// mean the image's entrypoint and cmd.
type ContainerSpec struct {
	Name        string
	Attempt     uint32
	Image       string
	Command     []string
	Args        []string
	Annotations map[string]string
	Mounts      []Mount
	// Privileged runs the container privileged; its pod must be too
	// (PodSpec.Privileged).
	Privileged bool
	// NoCapabilities drops every capability, as a hardened pod does.
	NoCapabilities bool
}

// Run runs crictl with args against this containerd.
func (c *Crictl) Run(args ...string) CmdResult {
	return c.run(2*time.Minute, args...)
}

func (c *Crictl) run(timeout time.Duration, args ...string) CmdResult {
	base := []string{
		"--config", filepath.Join(c.dir, "crictl.yaml"),
		"--runtime-endpoint", c.endpoint,
		"--image-endpoint", c.endpoint,
		"--timeout", "60s",
	}
	return run(timeout, c.bin, append(base, args...)...)
}

func (c *Crictl) must(args ...string) string {
	c.t.Helper()
	res := c.Run(args...)
	if res.Err != nil {
		c.t.Fatalf("%v", res.Err)
	}
	return strings.TrimSpace(res.Stdout)
}

func (c *Crictl) writeJSON(name string, v any) string {
	c.t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		c.t.Fatalf("%v", err)
	}
	f, err := os.CreateTemp(c.dir, name+"-*.json")
	if err != nil {
		c.t.Fatalf("%v", err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		c.t.Fatalf("%v", err)
	}
	return f.Name()
}

// RunPod starts a host-network pod sandbox, which needs no CNI.
func (c *Crictl) RunPod(name, namespace, uid string, annotations map[string]string) *Pod {
	c.t.Helper()
	return c.RunPodSpec(PodSpec{Name: name, Namespace: namespace, UID: uid, Annotations: annotations})
}

// RunPodSpec starts a pod sandbox from spec, failing the test on error.
func (c *Crictl) RunPodSpec(spec PodSpec) *Pod {
	c.t.Helper()
	pod, err := c.TryRunPod(spec)
	if err != nil {
		c.t.Fatalf("run pod %s: %v", spec.Name, err)
	}
	return pod
}

// CreateContainer creates a container that runs the image's entrypoint and
// returns its ID, or an error that carries crictl's stderr.
func (c *Crictl) CreateContainer(pod *Pod, name, image string, annotations map[string]string, mounts []Mount) (string, error) {
	return c.CreateContainerSpec(pod, ContainerSpec{Name: name, Image: image, Annotations: annotations, Mounts: mounts})
}

// CreateContainerSpec creates a container from spec in pod.
func (c *Crictl) CreateContainerSpec(pod *Pod, spec ContainerSpec) (string, error) {
	c.t.Helper()
	path := c.writeJSON("ctr-"+spec.Name, containerConfig(spec, pod.userns))
	res := c.Run("create", pod.ID, path, pod.configPath)
	if res.Err != nil {
		return "", res.Err
	}
	return lastLine(res.Stdout), nil
}

// containerConfig is crictl's container config for spec; a container of a
// pod with a user namespace must repeat the pod's userns_options.
func containerConfig(spec ContainerSpec, userns *UserNS) map[string]any {
	mounts := []map[string]any{}
	for _, m := range spec.Mounts {
		mounts = append(mounts, map[string]any{"host_path": m.HostPath, "container_path": m.ContainerPath, "readonly": m.Readonly,
			"propagation": criPropagation[m.Propagation]})
	}
	security := map[string]any{}
	if spec.Privileged {
		security["privileged"] = true
	}
	if spec.NoCapabilities {
		security["capabilities"] = map[string]any{"drop_capabilities": []string{"ALL"}}
	}
	if userns != nil {
		security["namespace_options"] = namespaceOptions(userns)
	}
	linux := map[string]any{}
	if len(security) > 0 {
		linux["security_context"] = security
	}
	return map[string]any{
		"metadata":    map[string]any{"name": spec.Name, "attempt": spec.Attempt},
		"image":       map[string]any{"image": spec.Image},
		"command":     spec.Command,
		"args":        spec.Args,
		"log_path":    fmt.Sprintf("%s_%d.log", spec.Name, spec.Attempt),
		"annotations": nonNil(spec.Annotations),
		"mounts":      mounts,
		"linux":       linux,
	}
}

// RunContainer creates and starts a container, failing the test on error.
func (c *Crictl) RunContainer(pod *Pod, name, image string, annotations map[string]string, mounts []Mount) string {
	c.t.Helper()
	id, err := c.CreateContainer(pod, name, image, annotations, mounts)
	if err != nil {
		c.t.Fatalf("create container %s: %v", name, err)
	}
	c.Start(id)
	return id
}

// Start starts a created container.
func (c *Crictl) Start(id string) {
	c.t.Helper()
	c.must("start", id)
}

// Exec runs cmd in a running container and returns its stdout.
func (c *Crictl) Exec(id string, cmd ...string) string {
	c.t.Helper()
	out, err := c.ExecErr(id, cmd...)
	if err != nil {
		c.t.Fatalf("exec %q in %s: %v", cmd, id, err)
	}
	return out
}

// ExecErr is Exec that returns the error instead of failing.
func (c *Crictl) ExecErr(id string, cmd ...string) (string, error) {
	res := c.Run(append([]string{"exec", id}, cmd...)...)
	return res.Stdout, res.Err
}

// Sh runs a shell script in a running container and returns its stdout.
func (c *Crictl) Sh(id, script string) string {
	c.t.Helper()
	return c.Exec(id, "sh", "-c", script)
}

// Stop stops a container at once (SIGKILL).
func (c *Crictl) Stop(id string) {
	c.t.Helper()
	c.must("stop", "--timeout", "0", id)
}

// Rm removes a container.
func (c *Crictl) Rm(id string) {
	c.t.Helper()
	c.must("rm", "--force", id)
}

// StopPod stops a pod sandbox and its containers.
func (c *Crictl) StopPod(pod *Pod) {
	c.t.Helper()
	c.must("stopp", pod.ID)
}

// RmPod removes a pod sandbox, stopping it first if needed.
func (c *Crictl) RmPod(pod *Pod) {
	c.t.Helper()
	c.must("rmp", "--force", pod.ID)
}

// Inspect returns crictl's inspect output for a container.
func (c *Crictl) Inspect(id string) map[string]any {
	c.t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(c.must("inspect", "--output", "json", id)), &v); err != nil {
		c.t.Fatalf("parse crictl inspect: %v", err)
	}
	return v
}

// Mounts returns the container's mounts as the runtime reports them
// (inspect's info.runtimeSpec.mounts): destination -> source.
func (c *Crictl) Mounts(id string) map[string]string {
	c.t.Helper()
	out := map[string]string{}
	info, _ := c.Inspect(id)["info"].(map[string]any)
	spec, _ := info["runtimeSpec"].(map[string]any)
	mounts, _ := spec["mounts"].([]any)
	for _, m := range mounts {
		mm, _ := m.(map[string]any)
		dst, _ := mm["destination"].(string)
		src, _ := mm["source"].(string)
		out[dst] = src
	}
	return out
}

// State returns a container's state, e.g. CONTAINER_RUNNING.
func (c *Crictl) State(id string) string {
	c.t.Helper()
	status, _ := c.Inspect(id)["status"].(map[string]any)
	state, _ := status["state"].(string)
	return state
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
