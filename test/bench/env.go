package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// benchEnv holds what the scenarios share: binaries and options.
type benchEnv struct {
	r           *runner
	o           *options
	bins        *harness.Bins
	emptyPlugin string
}

func (e *benchEnv) closeAll() {}

// The images the scenarios use.
var (
	appImage = harness.Image{Name: "localhost/app:bench", Entrypoint: []string{"/bin/sleep", "2147483647"}}
	// volImage declares VOLUME /data over a small directory: 2 directories
	// of 16 files of 1 KiB, and a symlink.
	volImage = func() harness.Image {
		img := harness.Image{Name: "localhost/vol:bench", Entrypoint: []string{"/bin/sleep", "2147483647"}, Volumes: []string{"/data"}}
		img.Files = append(img.Files, harness.Directory("/data", 0o755, 999, 999))
		content := strings.Repeat("x", 1024)
		for d := 0; d < 2; d++ {
			for f := 0; f < 16; f++ {
				img.Files = append(img.Files, harness.RegularFile(fmt.Sprintf("/data/d%d/f%02d", d, f), content, 0o644, 999, 999))
			}
		}
		img.Files = append(img.Files, harness.Symlink("/data/latest", "d0/f00"))
		return img
	}()
)

// variant is one configuration that a scenario measures: a containerd,
// optionally with a plugin, and a crictl for it.
type variant struct {
	name string
	ctd  *harness.Containerd
	cr   *harness.Crictl
	// pluginPID is the PID of the NRI plugin process, or 0.
	pluginPID int
	// storeRoot is nri-volumes' store, when it runs.
	storeRoot string
	// criMounts, when set, gives the CRI mounts of container name: the
	// floor variant's host directories in place of volumes.
	criMounts func(name string) []map[string]any
}

// plugin kinds a variant runs.
const (
	noPlugin = iota
	nriVolumes
	emptyNRI
	// baselineVolumes is nriVolumes run from the -baseline binary (its
	// own hook: a binary of before nri-volumes-hook has none beside it).
	baselineVolumes
)

// newVariant starts a containerd with the images imported and, by kind,
// nri-volumes or the empty plugin connected to it.
func (e *benchEnv) newVariant(name string, ctdOpts harness.ContainerdOptions, kind int, pluginCfg harness.PluginConfig, images ...harness.Image) *variant {
	r := e.r
	logf("starting containerd for variant %q", name)
	ctd := harness.StartContainerd(r, e.bins, ctdOpts)
	for _, img := range images {
		ctd.Import(r, img)
	}
	v := &variant{name: name, ctd: ctd, cr: ctd.Crictl(r)}
	switch kind {
	case nriVolumes, baselineVolumes:
		bin := e.bins.NRIVolumes
		if kind == baselineVolumes {
			bin = e.o.baseline
		}
		dir := filepath.Join(ctd.Dir, "plugin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			r.Fatalf("%v", err)
		}
		if pluginCfg.Root == "" {
			pluginCfg.Root = filepath.Join(dir, "store")
		}
		pluginCfg.ContainerdRoot = ctd.Root
		pluginCfg.HookPath = harness.HookBeside(bin)
		cfgPath := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfgPath, []byte(pluginCfg.YAML()), 0o644); err != nil {
			r.Fatalf("%v", err)
		}
		v.storeRoot = pluginCfg.Root
		// --log-level info, as in production: the harness's own StartPlugin
		// logs at debug, which would add to the plugin's cost.
		v.pluginPID = startPlugin(r, ctd, "10-volumes", filepath.Join(dir, "plugin.log"),
			bin, "run", "--config", cfgPath, "--socket", ctd.NRISocket, "--name", "volumes", "--idx", "10", "--log-level", "info")
	case emptyNRI:
		v.pluginPID = startPlugin(r, ctd, "10-empty", filepath.Join(ctd.Dir, "emptyplugin.log"),
			e.emptyPlugin, "--socket", ctd.NRISocket, "--name", "empty", "--idx", "10")
	}
	return v
}

// startPlugin starts an external NRI plugin, waits until containerd has
// synchronized it and returns its PID. It is ended by PID at cleanup.
func startPlugin(r *runner, ctd *harness.Containerd, fullName, logPath, bin string, args ...string) int {
	synced := ctd.SyncCount(fullName)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.Fatalf("%v", err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	ctd.WaitSynced(r, fullName, synced)
	return cmd.Process.Pid
}

// podSeq makes pod UIDs unique within a run.
var podSeq struct {
	sync.Mutex
	n int
}

// pod is a pod sandbox started with writePod/runPod; cfgPath is its config.
type pod struct {
	id, cfgPath string
}

// writeJSON writes v into the containerd's directory, where crictl's config
// is, and returns the path.
func writeJSON(dir, prefix string, v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, prefix+"-*.json")
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = f.Write(data)
	return f.Name(), err
}

// runPod starts a host-network pod (no CNI needed). It is safe for
// concurrent use, unlike the harness's helpers that fail the test.
func (v *variant) runPod(name string, annotations map[string]string) (*pod, error) {
	podSeq.Lock()
	podSeq.n++
	uid := fmt.Sprintf("uid-%s-%d", name, podSeq.n)
	podSeq.Unlock()
	logDir := filepath.Join(v.ctd.Dir, "logs", "default_"+name+"_"+uid)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	if annotations == nil {
		annotations = map[string]string{}
	}
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": uid, "attempt": 0},
		"log_directory": logDir,
		"annotations":   annotations,
		"linux": map[string]any{
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}},
		},
	}
	path, err := writeJSON(v.ctd.Dir, "pod", cfg)
	if err != nil {
		return nil, err
	}
	res := v.cr.Run("runp", path)
	if res.Err != nil {
		return nil, res.Err
	}
	return &pod{id: lastLine(res.Stdout), cfgPath: path}, nil
}

// createContainer creates a container and returns its ID.
func (v *variant) createContainer(p *pod, name, image string, annotations map[string]string) (string, error) {
	path, err := v.containerConfig(name, image, annotations)
	if err != nil {
		return "", err
	}
	defer os.Remove(path)
	return v.create(p, path)
}

// containerConfig writes the CRI config of container name, and makes the
// host directories of its criMounts, and returns the config's path.
func (v *variant) containerConfig(name, image string, annotations map[string]string) (string, error) {
	if annotations == nil {
		annotations = map[string]string{}
	}
	cfg := map[string]any{
		"metadata":    map[string]any{"name": name, "attempt": 0},
		"image":       map[string]any{"image": image},
		"log_path":    name + ".log",
		"annotations": annotations,
		"linux":       map[string]any{},
	}
	if v.criMounts != nil {
		cfg["mounts"] = v.criMounts(name)
	}
	return writeJSON(v.ctd.Dir, "ctr", cfg)
}

// create creates the container whose CRI config is at path.
func (v *variant) create(p *pod, path string) (string, error) {
	res := v.cr.Run("create", p.id, path, p.cfgPath)
	if res.Err != nil {
		return "", res.Err
	}
	return lastLine(res.Stdout), nil
}

// runContainer creates and starts a container.
func (v *variant) runContainer(p *pod, name, image string, annotations map[string]string) (string, error) {
	id, err := v.createContainer(p, name, image, annotations)
	if err != nil {
		return "", err
	}
	return id, v.start(id)
}

func (v *variant) start(id string) error {
	return v.cr.Run("start", id).Err
}

// removeContainer stops and removes a container.
func (v *variant) removeContainer(id string) error {
	return v.cr.Run("rm", "--force", id).Err
}

// removePod stops and removes a pod and its containers.
func (v *variant) removePod(p *pod) error {
	return v.cr.Run("rmp", "--force", p.id).Err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// parallel runs fn(i) for i in [0, n) on at most width goroutines and
// returns the errors, in order.
func parallel(n, width int, fn func(i int) error) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fn(i)
		}(i)
	}
	wg.Wait()
	return errs
}
