package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// SandboxImage is the pause image every containerd of the harness pins; it
// is built from busybox and imported at start, since nothing can be pulled.
const SandboxImage = "localhost/pause:e2e"

// ContainerdOptions configure a containerd.
type ContainerdOptions struct {
	// DisableNRI turns containerd's NRI off.
	DisableNRI bool
	// IgnoreImageDefinedVolumes is the CRI runtime setting of that name.
	IgnoreImageDefinedVolumes bool
	// ExtraNRIConfig holds TOML lines added to the NRI plugin's section,
	// e.g. "plugin_request_timeout = '5s'".
	ExtraNRIConfig string
	// NRIPlugins are installed in plugin_path before containerd starts.
	NRIPlugins []NRIPlugin
	// DefaultValidator, when set, turns on NRI's built-in default validator.
	DefaultValidator *DefaultValidator
	// NRISocketDir puts the NRI socket alone in a directory of its own,
	// DIR/nri/nri.sock, as /var/run/nri/nri.sock is on a node, so that the
	// directory can be mounted into a plugin's container.
	NRISocketDir bool
}

// DefaultValidator configures NRI's default validator, the one that makes
// plugins required.
type DefaultValidator struct {
	// RequiredPlugins are plugin names (without the index) that must have
	// handled a container for its creation to succeed.
	RequiredPlugins []string
	// TolerateMissingPluginsAnnotation is the annotation key whose "true"
	// lets a pod or container in without its required plugins.
	TolerateMissingPluginsAnnotation string
	// RejectOCIHookAdjustment refuses containers that a plugin adds OCI hooks to.
	RejectOCIHookAdjustment bool
}

// Containerd is a containerd process with its own root, state, sockets and
// NRI socket under one temporary directory.
type Containerd struct {
	Bins *Bins
	// Dir holds everything below.
	Dir, Root, State, Address string
	// NRISocket is where NRI plugins connect.
	NRISocket string
	// NRIPluginPath and NRIPluginConfigPath are containerd's NRI
	// plugin_path and plugin_config_path.
	NRIPluginPath, NRIPluginConfigPath string
	ConfigPath, LogPath                string

	t    TB
	proc *process
}

// StartContainerd starts containerd, waits for its socket and imports the
// sandbox image. It is stopped by a cleanup on t.
func StartContainerd(t TB, bins *Bins, opts ContainerdOptions) *Containerd {
	t.Helper()
	dir := tempDir(t, "ctd")
	c := &Containerd{
		Bins:                bins,
		Dir:                 dir,
		Root:                filepath.Join(dir, "root"),
		State:               filepath.Join(dir, "state"),
		Address:             filepath.Join(dir, "containerd.sock"),
		NRISocket:           filepath.Join(dir, "nri.sock"),
		NRIPluginPath:       filepath.Join(dir, "nri-plugins"),
		NRIPluginConfigPath: filepath.Join(dir, "nri-conf.d"),
		ConfigPath:          filepath.Join(dir, "config.toml"),
		LogPath:             filepath.Join(dir, "containerd.log"),
		t:                   t,
	}
	if opts.NRISocketDir {
		c.NRISocket = filepath.Join(dir, "nri", "nri.sock")
	}
	// runc remounts a user-namespaced container's mounts from inside its
	// user namespace, which must be able to walk down to containerd's root
	// and state: the temporary directory is 0700 otherwise.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	for _, d := range []string{filepath.Dir(c.NRISocket), c.Root, c.State, c.NRIPluginPath, c.NRIPluginConfigPath, filepath.Join(dir, "cni-conf"), filepath.Join(dir, "cni-bin"), filepath.Join(dir, "opt"), filepath.Join(dir, "verifiers"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("%v", err)
		}
	}
	if err := os.WriteFile(c.ConfigPath, []byte(c.config(opts)), 0o644); err != nil {
		t.Fatalf("write containerd config: %v", err)
	}
	// crictl reads a config file; give it its own so the host's never counts.
	crictlCfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.Address, c.Address)
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), []byte(crictlCfg), 0o644); err != nil {
		t.Fatalf("write crictl config: %v", err)
	}
	for _, pl := range opts.NRIPlugins {
		c.installPlugin(t, pl)
	}
	t.Cleanup(c.stop)
	c.launch(t)
	c.Import(t, Image{Name: SandboxImage, Entrypoint: []string{"/bin/sleep", "2147483647"}})
	return c
}

// NRIPlugin is a plugin that containerd itself launches from its
// plugin_path, with its configuration in plugin_config_path.
type NRIPlugin struct {
	// Name is the file name, "IDX-NAME", e.g. "10-volumes".
	Name string
	// Bin is copied to plugin_path/Name.
	Bin string
	// Config, when set, returns the configuration that is written to
	// plugin_config_path/Name.conf; it gets the containerd, whose paths are
	// known by then.
	Config func(*Containerd) string
}

func (c *Containerd) installPlugin(t TB, pl NRIPlugin) {
	t.Helper()
	data, err := os.ReadFile(pl.Bin)
	if err != nil {
		t.Fatalf("install NRI plugin %s: %v", pl.Name, err)
	}
	if err := os.WriteFile(filepath.Join(c.NRIPluginPath, pl.Name), data, 0o755); err != nil {
		t.Fatalf("install NRI plugin %s: %v", pl.Name, err)
	}
	if pl.Config != nil {
		if err := os.WriteFile(filepath.Join(c.NRIPluginConfigPath, pl.Name+".conf"), []byte(pl.Config(c)), 0o644); err != nil {
			t.Fatalf("install NRI plugin config %s: %v", pl.Name, err)
		}
	}
}

// launch starts the containerd process and waits until it answers.
func (c *Containerd) launch(t TB) {
	t.Helper()
	cmd := exec.Command(c.Bins.Containerd, "--config", c.ConfigPath, "--log-level", "debug")
	// containerd finds containerd-shim-runc-v2 on PATH.
	cmd.Env = append(os.Environ(), "PATH="+c.Bins.Dir+":"+os.Getenv("PATH"))
	c.proc = startProcess(t, "containerd", cmd, c.LogPath)
	done := c.proc.done

	ready := waitFor(60*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		return c.ctr(10*time.Second, "version").Err == nil
	})
	select {
	case <-done:
		t.Fatalf("containerd exited at start (%v); its log:\n%s", cmd.ProcessState, c.LogTail(60))
	default:
	}
	if !ready {
		t.Fatalf("containerd did not answer on %s within 60s; its log:\n%s", c.Address, c.LogTail(60))
	}
	t.Logf("containerd pid %d at %s", cmd.Process.Pid, c.Address)
}

// Restart stops the containerd process by its PID and starts it again with
// the same configuration and state; containers keep running meanwhile, as
// they do when a node's containerd restarts.
func (c *Containerd) Restart(t TB) {
	t.Helper()
	c.terminate()
	c.launch(t)
}

// terminate ends the containerd process: SIGTERM, then SIGKILL after 15s.
func (c *Containerd) terminate() {
	c.proc.stop(15 * time.Second)
}

func (c *Containerd) runcRoot() string { return filepath.Join(c.State, "runc") }

// config returns containerd's TOML configuration. Every path points into
// c.Dir so that several containerds and the host's own never meet.
func (c *Containerd) config(opts ContainerdOptions) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	var b strings.Builder
	fmt.Fprintf(&b, `version = 3
root = %s
state = %s
imports = []

[grpc]
  address = %s

[ttrpc]
  address = %s

[debug]
  address = ""

[plugins.'io.containerd.internal.v1.opt']
  path = %s

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = %s

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = %s

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  ignore_image_defined_volumes = %t

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [%s]
  conf_dir = %s

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  sandboxer = "podsandbox"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = %s
  Root = %s

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.nri.v1.nri']
  disable = %t
  socket_path = %s
  plugin_path = %s
  plugin_config_path = %s
%s
`,
		q(c.Root), q(c.State), q(c.Address), q(c.Address+".ttrpc"),
		q(filepath.Join(c.Dir, "opt")), q(filepath.Join(c.Dir, "verifiers")),
		q(SandboxImage), opts.IgnoreImageDefinedVolumes,
		q(filepath.Join(c.Dir, "cni-bin")), q(filepath.Join(c.Dir, "cni-conf")),
		q(c.Bins.Runc), q(c.runcRoot()),
		opts.DisableNRI, q(c.NRISocket), q(c.NRIPluginPath), q(c.NRIPluginConfigPath),
		opts.ExtraNRIConfig)
	if v := opts.DefaultValidator; v != nil {
		required := make([]string, len(v.RequiredPlugins))
		for i, name := range v.RequiredPlugins {
			required[i] = q(name)
		}
		fmt.Fprintf(&b, `
[plugins.'io.containerd.nri.v1.nri'.default_validator]
  enable = true
  required_plugins = [%s]
  tolerate_missing_plugins_annotation = %s
  reject_oci_hook_adjustment = %t
`, strings.Join(required, ", "), q(v.TolerateMissingPluginsAnnotation), v.RejectOCIHookAdjustment)
	}
	return b.String()
}

// ctr runs ctr against this containerd in the k8s.io namespace.
func (c *Containerd) ctr(timeout time.Duration, args ...string) CmdResult {
	return run(timeout, c.Bins.Ctr, append([]string{"--address", c.Address, "--namespace", "k8s.io"}, args...)...)
}

// Import builds img and imports it into the CRI namespace.
func (c *Containerd) Import(t TB, img Image) *BuiltImage {
	t.Helper()
	built, err := img.Build(c.Dir)
	if err != nil {
		t.Fatalf("build image %s: %v", img.Name, err)
	}
	defer os.Remove(built.Archive)
	if res := c.ctr(2*time.Minute, "images", "import", "--all-platforms", built.Archive); res.Err != nil {
		t.Fatalf("import image %s: %v", img.Name, res.Err)
	}
	if res := c.ctr(30*time.Second, "images", "ls", "-q"); res.Err != nil || !strings.Contains(res.Stdout, img.Name) {
		t.Fatalf("image %s not listed after import: %v\n%s", img.Name, res.Err, res.Stdout)
	}
	return built
}

// Crictl returns a crictl bound to this containerd.
func (c *Containerd) Crictl(t TB) *Crictl {
	return &Crictl{t: t, bin: c.Bins.Crictl, endpoint: "unix://" + c.Address, dir: c.Dir}
}

// LogTail returns the last n lines of containerd's log.
func (c *Containerd) LogTail(n int) string {
	return tailFile(c.LogPath, n)
}

// Log returns containerd's whole log.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(c.LogPath)
	return string(b)
}

// Running reports whether the containerd process is still alive.
func (c *Containerd) Running() bool {
	return c.proc.running()
}

// stop removes every pod, ends containerd by its PID, ends what it left
// (its shims and containers), and unmounts what is left under c.Dir.
func (c *Containerd) stop() {
	t := c.t
	if f, ok := t.(interface{ Failed() bool }); ok && f.Failed() {
		t.Logf("containerd log (last lines):\n%s", c.LogTail(150))
	}
	if c.Running() {
		cr := c.Crictl(t)
		if res := cr.run(2*time.Minute, "rmp", "--all", "--force"); res.Err != nil {
			t.Logf("remove pods at teardown: %v", res.Err)
		}
		c.terminate()
	}
	c.killShims()
	c.killContainers()
	unmountUnder(t, c.Dir)
}

// killShims kills the shims that this containerd started: those whose
// command line carries its address.
func (c *Containerd) killShims() {
	for _, pid := range pidsWithArg(c.Address) {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

// killContainers kills and deletes the containers left in this
// containerd's runc root.
func (c *Containerd) killContainers() {
	namespaces, _ := os.ReadDir(c.runcRoot())
	for _, ns := range namespaces {
		root := filepath.Join(c.runcRoot(), ns.Name())
		res := run(30*time.Second, c.Bins.Runc, "--root", root, "list", "-q")
		for _, id := range strings.Fields(res.Stdout) {
			run(30*time.Second, c.Bins.Runc, "--root", root, "kill", "--all", id, "KILL")
			if res := run(30*time.Second, c.Bins.Runc, "--root", root, "delete", "--force", id); res.Err != nil {
				c.t.Logf("runc delete %s: %v", id, res.Err)
			}
		}
	}
}

// pidsWithArg returns the processes one of whose arguments is arg.
func pidsWithArg(arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(cmdline, []byte{0}) {
			if string(a) == arg || string(a) == "unix://"+arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// unmountUnder lazily unmounts every mount at or below dir, latest first.
func unmountUnder(t TB, dir string) {
	if err := fsx.UnmountUnder(dir); err != nil {
		t.Logf("unmount below %s: %v", dir, err)
	}
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
