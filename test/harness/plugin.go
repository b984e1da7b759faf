package harness

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// PluginConfig is the plugin's configuration document, as SPEC.md describes
// it. Empty fields are left out, so the plugin's defaults apply; Root,
// ContainerdRoot and HookPath are filled in by StartPlugin when empty.
type PluginConfig struct {
	Root             string
	ContainerdRoot   string
	HookPath         string
	ImageVolumes     string
	KeepAfterPod     bool
	TmpfsDefaultSize string
	TmpfsMaxSize     string
	AllowedHostPaths []string
	// Extra is YAML appended verbatim at the top level.
	Extra string
}

// YAML renders the configuration.
func (c PluginConfig) YAML() string {
	var b strings.Builder
	str := func(key, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\n", key, strconv.Quote(v))
		}
	}
	str("root", c.Root)
	str("containerdRoot", c.ContainerdRoot)
	str("hookPath", c.HookPath)
	str("imageVolumes", c.ImageVolumes)
	if c.KeepAfterPod {
		b.WriteString("anonymousVolumes:\n  keepAfterPod: true\n")
	}
	if c.TmpfsDefaultSize != "" || c.TmpfsMaxSize != "" {
		b.WriteString("tmpfs:\n")
		if c.TmpfsDefaultSize != "" {
			fmt.Fprintf(&b, "  defaultSize: %s\n", strconv.Quote(c.TmpfsDefaultSize))
		}
		if c.TmpfsMaxSize != "" {
			fmt.Fprintf(&b, "  maxSize: %s\n", strconv.Quote(c.TmpfsMaxSize))
		}
	}
	if len(c.AllowedHostPaths) > 0 {
		b.WriteString("bindMounts:\n  allowedHostPaths:\n")
		for _, p := range c.AllowedHostPaths {
			fmt.Fprintf(&b, "    - %s\n", strconv.Quote(p))
		}
	}
	b.WriteString(c.Extra)
	return b.String()
}

// PluginOptions configure a plugin process.
type PluginOptions struct {
	Config PluginConfig
	// Name and Idx are passed as --name and --idx when set; the plugin's
	// defaults are "volumes" and "10".
	Name, Idx string
	// Metrics starts the plugin with --metrics-address on a free port of
	// 127.0.0.1; Plugin.MetricsAddr is the address it bound.
	Metrics bool
}

// Plugin is an nri-volumes run process connected to a Containerd.
type Plugin struct {
	Bin string
	// Root is the volume store.
	Root       string
	ConfigPath string
	LogPath    string
	Ctd        *Containerd
	// MetricsAddr is where /metrics and /healthz are served, with
	// PluginOptions.Metrics.
	MetricsAddr string

	t    TB
	opts PluginOptions
	proc *process
}

// StartPlugin writes the configuration, starts `nri-volumes run` against
// ctd's NRI socket and waits until containerd has synchronized it. It is
// stopped by a cleanup on t.
func StartPlugin(t TB, ctd *Containerd, opts PluginOptions) *Plugin {
	t.Helper()
	if ctd.Bins.NRIVolumes == "" {
		t.Fatalf("StartPlugin: Bins.NRIVolumes is empty; use harness.Binaries")
	}
	dir := tempDir(t, "plugin")
	if opts.Config.Root == "" {
		opts.Config.Root = filepath.Join(dir, "store")
	}
	if opts.Config.ContainerdRoot == "" {
		opts.Config.ContainerdRoot = ctd.Root
	}
	if opts.Config.HookPath == "" {
		opts.Config.HookPath = HookBeside(ctd.Bins.NRIVolumes)
	}
	if opts.Name == "" {
		opts.Name = "volumes"
	}
	if opts.Idx == "" {
		opts.Idx = "10"
	}
	p := &Plugin{
		Bin:        ctd.Bins.NRIVolumes,
		Root:       opts.Config.Root,
		ConfigPath: filepath.Join(dir, "config.yaml"),
		LogPath:    filepath.Join(dir, "plugin.log"),
		Ctd:        ctd,
		t:          t,
		opts:       opts,
	}
	if err := os.WriteFile(p.ConfigPath, []byte(opts.Config.YAML()), 0o644); err != nil {
		t.Fatalf("write plugin config: %v", err)
	}
	t.Cleanup(func() {
		if f, ok := t.(interface{ Failed() bool }); ok && f.Failed() {
			t.Logf("plugin config:\n%s\nplugin log (last lines):\n%s", opts.Config.YAML(), p.LogTail(150))
		}
	})
	p.Start(t)
	return p
}

// Start starts the plugin process again after Stop.
func (p *Plugin) Start(t TB) {
	t.Helper()
	synced := p.Ctd.syncCount(p.opts.Idx + "-" + p.opts.Name)
	args := []string{"run", "--config", p.ConfigPath, "--socket", p.Ctd.NRISocket,
		"--name", p.opts.Name, "--idx", p.opts.Idx, "--log-level", "debug"}
	if p.opts.Metrics {
		args = append(args, "--metrics-address", "127.0.0.1:0")
	}
	cmd := exec.Command(p.Bin, args...)
	p.proc = startProcess(t, "plugin", cmd, p.LogPath)
	done := p.proc.done
	t.Cleanup(p.Stop)

	ok := waitFor(30*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		return p.Ctd.syncCount(p.opts.Idx+"-"+p.opts.Name) > synced
	})
	select {
	case <-done:
		t.Fatalf("plugin exited at start (%v); its log:\n%s", cmd.ProcessState, p.LogTail(60))
	default:
	}
	if !ok {
		t.Fatalf("containerd did not synchronize the plugin within 30s; plugin log:\n%s\ncontainerd log:\n%s", p.LogTail(60), p.Ctd.LogTail(40))
	}
	if p.opts.Metrics {
		// The plugin logs the address it bound before it connects; the
		// log is appended to across restarts, so the last one counts.
		data, _ := os.ReadFile(p.LogPath)
		found := metricsAddrRE.FindAllSubmatch(data, -1)
		if len(found) == 0 {
			t.Fatalf("the plugin logged no metrics address; its log:\n%s", p.LogTail(60))
		}
		p.MetricsAddr = string(found[len(found)-1][1])
	}
}

var metricsAddrRE = regexp.MustCompile(`serving /metrics and /healthz" address="?([0-9.:]+)`)

// Get fetches path (/metrics or /healthz) from the plugin's metrics server.
func (p *Plugin) Get(path string) (int, string, error) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + p.MetricsAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Stop ends the plugin by its PID: SIGTERM, then SIGKILL after 10s. It is
// safe to call more than once.
func (p *Plugin) Stop() {
	p.proc.stop(10 * time.Second)
}

// Running reports whether the plugin process is alive.
func (p *Plugin) Running() bool {
	return p.proc.running()
}

// LogTail returns the last n lines of the plugin's log.
func (p *Plugin) LogTail(n int) string {
	return tailFile(p.LogPath, n)
}

// CLI runs the nri-volumes binary with args as given.
func (p *Plugin) CLI(args ...string) CmdResult {
	return run(time.Minute, p.Bin, args...)
}

// Volume runs `nri-volumes volume SUB --root ROOT ARGS...` against this
// plugin's store.
func (p *Plugin) Volume(sub string, args ...string) CmdResult {
	return p.CLI(append([]string{"volume", sub, "--root", p.Root}, args...)...)
}

// VolumeDir is where a volume's data lives: ROOT/volumes/NS/NAME/_data.
func (p *Plugin) VolumeDir(namespace, name string) string {
	return filepath.Join(p.Root, "volumes", namespace, name, "_data")
}

// syncCount counts how often containerd has logged that it synchronized the
// plugin named name ("IDX-NAME"), external or launched from plugin_path.
// The log quotes the name, escaped.
func (c *Containerd) syncCount(name string) int {
	n := 0
	for _, line := range strings.Split(c.Log(), "\n") {
		if (strings.Contains(line, "connected and synchronized") || strings.Contains(line, "synchronization success")) &&
			strings.Contains(line, `"`+name+`\"`) {
			n++
		}
	}
	return n
}

// SyncCount is how often containerd has synchronized the NRI plugin name
// ("IDX-NAME") so far; pass it to WaitSynced to wait for the next time.
func (c *Containerd) SyncCount(name string) int {
	return c.syncCount(name)
}

// WaitSynced waits up to 30s until containerd has synchronized the plugin
// name ("IDX-NAME") more than after times.
func (c *Containerd) WaitSynced(t TB, name string, after int) {
	t.Helper()
	if !waitFor(30*time.Second, func() bool { return c.syncCount(name) > after }) {
		t.Fatalf("containerd did not synchronize NRI plugin %s within 30s; its log:\n%s", name, c.LogTail(60))
	}
}
