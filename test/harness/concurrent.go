package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// PodSpec describes a host-network pod sandbox for TryRunPod.
type PodSpec struct {
	Name, Namespace, UID string
	Annotations          map[string]string
	// Privileged makes a sandbox that may hold privileged containers.
	Privileged bool
	// UserNS, when set, runs the pod in a user namespace of its own, as
	// kubelet does for hostUsers: false; its containers get the same
	// userns_options.
	UserNS *UserNS
}

// UserNS maps container ids 0 to Size-1 to host ids HostID onwards, for
// both uids and gids.
type UserNS struct {
	HostID, Size uint32
}

// namespaceOptions is the CRI namespace_options of a pod or container:
// host networking (which needs no CNI) and, with userns, a user namespace of
// the pod's.
func namespaceOptions(userns *UserNS) map[string]any {
	opts := map[string]any{"network": 2}
	if userns != nil {
		ids := []map[string]any{{"host_id": userns.HostID, "container_id": 0, "length": userns.Size}}
		opts["userns_options"] = map[string]any{"mode": 0, "uids": ids, "gids": ids}
	}
	return opts
}

// The Try helpers below return an error instead of failing the test, and
// unlike the rest of Crictl they are safe to call from several goroutines at
// once: they never touch the test.

// TryRunPod starts a pod sandbox from spec.
func (c *Crictl) TryRunPod(spec PodSpec) (*Pod, error) {
	logDir := filepath.Join(c.dir, "logs", spec.Namespace+"_"+spec.Name+"_"+spec.UID)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	security := map[string]any{"namespace_options": namespaceOptions(spec.UserNS)}
	if spec.Privileged {
		security["privileged"] = true
	}
	cfg := map[string]any{
		"metadata":      map[string]any{"name": spec.Name, "namespace": spec.Namespace, "uid": spec.UID, "attempt": 0},
		"log_directory": logDir,
		"annotations":   nonNil(spec.Annotations),
		"linux":         map[string]any{"security_context": security},
	}
	path, err := c.tryWriteJSON("pod-"+spec.Name, cfg)
	if err != nil {
		return nil, err
	}
	res := c.Run("runp", path)
	if res.Err != nil {
		return nil, res.Err
	}
	return &Pod{ID: lastLine(res.Stdout), Name: spec.Name, Namespace: spec.Namespace, UID: spec.UID, configPath: path, userns: spec.UserNS}, nil
}

// TryCreateContainer creates a container from spec in pod.
func (c *Crictl) TryCreateContainer(pod *Pod, spec ContainerSpec) (string, error) {
	path, err := c.tryWriteJSON("ctr-"+spec.Name, containerConfig(spec, pod.userns))
	if err != nil {
		return "", err
	}
	res := c.Run("create", pod.ID, path, pod.configPath)
	if res.Err != nil {
		return "", res.Err
	}
	return lastLine(res.Stdout), nil
}

// TryRunContainer creates and starts a container from spec in pod; the ID
// is returned even when only the start failed.
func (c *Crictl) TryRunContainer(pod *Pod, spec ContainerSpec) (string, error) {
	id, err := c.TryCreateContainer(pod, spec)
	if err != nil {
		return "", err
	}
	return id, c.Run("start", id).Err
}

// TryRmPod removes a pod sandbox, stopping it first if needed.
func (c *Crictl) TryRmPod(pod *Pod) error {
	return c.Run("rmp", "--force", pod.ID).Err
}

// RunningContainers returns the IDs of the running containers.
func (c *Crictl) RunningContainers() ([]string, error) {
	res := c.Run("ps", "-q", "--state", "running")
	if res.Err != nil {
		return nil, res.Err
	}
	return strings.Fields(res.Stdout), nil
}

// TryMounts returns the container's mounts as the runtime reports them
// (inspect's info.runtimeSpec.mounts): destination -> source.
func (c *Crictl) TryMounts(id string) (map[string]string, error) {
	res := c.Run("inspect", "--output", "json", id)
	if res.Err != nil {
		return nil, res.Err
	}
	var v struct {
		Info struct {
			RuntimeSpec struct {
				Mounts []struct {
					Destination string `json:"destination"`
					Source      string `json:"source"`
				} `json:"mounts"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &v); err != nil {
		return nil, fmt.Errorf("parse crictl inspect %s: %w", id, err)
	}
	out := map[string]string{}
	for _, m := range v.Info.RuntimeSpec.Mounts {
		out[m.Destination] = m.Source
	}
	return out, nil
}

// Logs returns what a container wrote to its stdout and stderr.
func (c *Crictl) Logs(id string) string {
	res := c.Run("logs", id)
	return res.Stdout + res.Stderr
}

func (c *Crictl) tryWriteJSON(name string, v any) (string, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(c.dir, name+"-*.json")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// Kill ends the plugin process with SIGKILL, by its PID, as a crash would,
// and waits until it is gone; Start starts it again.
func (p *Plugin) Kill() {
	if !p.Running() {
		return
	}
	_ = p.proc.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.proc.done:
	case <-time.After(10 * time.Second):
	}
}

// Log returns the plugin's whole log.
func (p *Plugin) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}
