package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// Bins holds the paths of the binaries a test runs.
type Bins struct {
	// Dir is the runtime cache directory; containerd finds its shim there.
	Dir        string
	Containerd string
	Ctr        string
	Shim       string
	Runc       string
	Crictl     string
	// Kubelet runs standalone against a Containerd (see StartKubelet).
	Kubelet string
	// NRIVolumes is this repository's ./cmd/nri-volumes, freshly built.
	NRIVolumes string
}

// CacheDir is where the pinned runtime is built and kept:
// $NRI_VOLUMES_TEST_CACHE, or /var/cache/nri-volumes-test/bin.
func CacheDir() string {
	if d := os.Getenv("NRI_VOLUMES_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/nri-volumes-test/bin"
}

// runtimeOnce builds the runtime once per process and set: [0] the whole
// runtime of the tests, [1] the base that BaseRuntime asks for.
var runtimeOnce [2]struct {
	sync.Once
	err error
}

// Binaries returns the runtime (see Runtime) and ./cmd/nri-volumes built
// into a temporary directory. It fails the test when either cannot be had.
func Binaries(t TB) *Bins {
	t.Helper()
	b := Runtime(t)
	b.NRIVolumes = BuildPlugin(t)
	return b
}

// BaseBinaries is Binaries with BaseRuntime: for the demo, which runs no
// kubelet and no older containerd.
func BaseBinaries(t TB) *Bins {
	t.Helper()
	b := BaseRuntime(t)
	b.NRIVolumes = BuildPlugin(t)
	return b
}

// Runtime makes sure the pinned runtime is in the cache, building it with
// hack/install-runtime.sh when it is not (which takes minutes), and returns
// its paths; NRIVolumes is left empty.
func Runtime(t TB) *Bins {
	t.Helper()
	return installRuntime(t, false)
}

// BaseRuntime is Runtime without the kubelet and the older containerd,
// which only the tests run (hack/install-runtime.sh --base); Kubelet is left
// empty. On a fresh cache it saves the kubelet's build, most of the time.
func BaseRuntime(t TB) *Bins {
	t.Helper()
	return installRuntime(t, true)
}

func installRuntime(t TB, base bool) *Bins {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("%v", err)
	}
	cache := CacheDir()
	args := []string{filepath.Join(root, "hack", "install-runtime.sh")}
	once := &runtimeOnce[0]
	if base {
		args = append(args, "--base")
		once = &runtimeOnce[1]
	}
	args = append(args, cache)
	once.Do(func() {
		cmd := exec.Command("bash", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			once.err = &CmdError{Args: cmd.Args, Stderr: string(out), Err: err}
		}
	})
	if once.err != nil {
		t.Fatalf("install the runtime: %v", once.err)
	}
	b := &Bins{
		Dir:        cache,
		Containerd: filepath.Join(cache, "containerd"),
		Ctr:        filepath.Join(cache, "ctr"),
		Shim:       filepath.Join(cache, "containerd-shim-runc-v2"),
		Runc:       filepath.Join(cache, "runc"),
		Crictl:     filepath.Join(cache, "crictl"),
	}
	if !base {
		b.Kubelet = filepath.Join(cache, "kubelet")
	}
	return b
}

// GoTool makes sure the pinned Go tool name (registry, crane) is in the
// runtime cache, building it with hack/install-NAME.sh when it is not, and
// returns its path.
func GoTool(t TB, name string) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("%v", err)
	}
	cache := CacheDir()
	cmd := exec.Command("bash", filepath.Join(root, "hack", "install-"+name+".sh"), cache)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install %s: %v", name, &CmdError{Args: cmd.Args, Stderr: string(out), Err: err})
	}
	return filepath.Join(cache, name)
}

// BuildPlugin builds ./cmd/nri-volumes into a temporary directory and returns
// the binary's path.
func BuildPlugin(t TB) string {
	t.Helper()
	start := time.Now()
	out, err := BuildPluginTo(tempDir(t, "bin"))
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("built nri-volumes in %s", time.Since(start).Round(time.Millisecond))
	return out
}

// BuildPluginTo builds ./cmd/nri-volumes and ./cmd/nri-volumes-hook into dir
// and returns the path of nri-volumes; the hook is beside it (see
// HookBeside). When $NRI_VOLUMES_TEST_PLUGIN names a binary, that one is
// used instead, unbuilt: a way to test a release build.
func BuildPluginTo(dir string) (string, error) {
	if bin := os.Getenv("NRI_VOLUMES_TEST_PLUGIN"); bin != "" {
		return filepath.Abs(bin)
	}
	return buildPlugin(dir)
}

// BuildStaticPluginTo builds ./cmd/nri-volumes into dir, a binary that runs
// in a container image with no libc, and returns its path.
// $NRI_VOLUMES_TEST_PLUGIN is not used: a release build need not be static.
func BuildStaticPluginTo(dir string) (string, error) {
	return buildPlugin(dir)
}

// buildPlugin builds ./cmd/nri-volumes and ./cmd/nri-volumes-hook into dir
// with cgo off, as `make build` and the release image do, and returns the
// plugin's path. Static binaries start faster: the hook runs on the path of
// every container start that copies up.
func buildPlugin(dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/nri-volumes", "./cmd/nri-volumes-hook")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", &CmdError{Args: cmd.Args, Stderr: string(b), Err: err}
	}
	return filepath.Join(dir, "nri-volumes"), nil
}

// HookBeside returns the nri-volumes-hook beside the nri-volumes binary bin,
// as the plugin's default hookPath expects it; when there is none (a binary
// from $NRI_VOLUMES_TEST_PLUGIN alone), bin itself, which runs the same hook.
func HookBeside(bin string) string {
	hook := filepath.Join(filepath.Dir(bin), "nri-volumes-hook")
	if _, err := os.Stat(hook); err != nil {
		return bin
	}
	return hook
}
