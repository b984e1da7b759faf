package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// binDir holds the nri-volumes binary that the tests share; it is built
// once, on first use.
var binDir string

var pluginBuild struct {
	sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nrivol-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The keys and images the tests use.
const (
	podKey   = "volumes.noderesource.dev/pod"
	appImage = "localhost/app:e2e"
)

// testBins returns the runtime and the nri-volumes binary that the tests
// share; it skips the test when not root.
func testBins(t *testing.T) *harness.Bins {
	t.Helper()
	harness.RequireRoot(t)
	bins := harness.Runtime(t)
	pluginBuild.Do(func() {
		pluginBuild.path, pluginBuild.err = harness.BuildPluginTo(binDir)
	})
	if pluginBuild.err != nil {
		t.Fatalf("build nri-volumes: %v", pluginBuild.err)
	}
	bins.NRIVolumes = pluginBuild.path
	return bins
}

// env is one test's containerd, plugin and crictl.
type env struct {
	t      *testing.T
	bins   *harness.Bins
	ctd    *harness.Containerd
	plugin *harness.Plugin
	cr     *harness.Crictl
}

// newEnv starts containerd and the plugin, and imports appImage (busybox
// that sleeps).
func newEnv(t *testing.T, ctdOpts harness.ContainerdOptions, cfg harness.PluginConfig) *env {
	t.Helper()
	bins := testBins(t)
	ctd := harness.StartContainerd(t, bins, ctdOpts)
	ctd.Import(t, harness.Image{Name: appImage, Entrypoint: []string{"/bin/sleep", "2147483647"}})
	p := harness.StartPlugin(t, ctd, harness.PluginOptions{Config: cfg})
	return &env{t: t, bins: bins, ctd: ctd, plugin: p, cr: ctd.Crictl(t)}
}

// volume runs a volume subcommand and fails the test if it fails.
func (e *env) volume(sub string, args ...string) string {
	e.t.Helper()
	res := e.plugin.Volume(sub, args...)
	if res.Err != nil {
		e.t.Fatalf("%v", res.Err)
	}
	return res.Stdout
}

var anonName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// anonymousVolumes lists the anonymous volume names in a namespace of the store.
func (e *env) anonymousVolumes(namespace string) []string {
	e.t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.plugin.Root, "volumes", namespace))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatalf("%v", err)
	}
	var names []string
	for _, en := range entries {
		if anonName.MatchString(en.Name()) {
			names = append(names, en.Name())
		}
	}
	sort.Strings(names)
	return names
}

// storeVolumes lists every NS/NAME entry under ROOT/volumes, the store's own
// directories but .spare included.
func storeVolumes(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	namespaces, err := os.ReadDir(filepath.Join(root, "volumes"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("%v", err)
	}
	for _, ns := range namespaces {
		if ns.Name() == ".spare" {
			continue // empty directories and files the plugin keeps made ahead
		}
		vols, _ := os.ReadDir(filepath.Join(root, "volumes", ns.Name()))
		for _, v := range vols {
			out = append(out, ns.Name()+"/"+v.Name())
		}
	}
	return out
}

// eventually polls cond for up to 10s.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

func trim(s string) string { return strings.TrimSpace(s) }

// mountLine returns the /proc/mounts line whose mount point is target.
func mountLine(t *testing.T, procMounts, target string) string {
	t.Helper()
	for _, line := range strings.Split(procMounts, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1] == target {
			return line
		}
	}
	t.Fatalf("%s is not a mount point; /proc/mounts:\n%s", target, procMounts)
	return ""
}
