package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoRuntimeBuildsNoKubelet checks what a newcomer's `make demo` builds
// on a fresh machine: containerd, runc and crictl, which the demo runs, and
// not the tests' kubelet (most of the build time, issue 19) nor the older
// containerd. It runs hack/install-runtime.sh as `make demo` does, on a
// cache that already holds the base runtime, with a `go` on PATH that
// records every call and builds nothing: the install must not need it.
func TestDemoRuntimeBuildsNoKubelet(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	make := exec.Command("make", "-n", "demo")
	make.Dir = root
	out, err := make.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n demo: %v\n%s", err, out)
	}
	var install string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "install-runtime.sh") {
			install = line
		}
	}
	if install == "" {
		t.Fatalf("make -n demo runs no hack/install-runtime.sh:\n%s", out)
	}
	args := strings.Fields(install)
	if len(args) < 2 || args[0] != "bash" {
		t.Fatalf("make -n demo: unexpected install line %q", install)
	}

	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", "crictl"} {
		if err := os.WriteFile(filepath.Join(cache, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	versions, err := Versions()
	if err != nil {
		t.Fatal(err)
	}
	stamp := "containerd=" + versions["CONTAINERD_VERSION"] + " runc=" + versions["RUNC_VERSION"] + "+seccomp crictl=" + versions["CRICTL_VERSION"]
	if err := os.WriteFile(filepath.Join(cache, "versions.stamp"), []byte(stamp+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fakeBin := filepath.Join(dir, "fakebin")
	calls := filepath.Join(dir, "go-calls")
	if err := os.MkdirAll(fakeBin, 0o755); err != nil {
		t.Fatal(err)
	}
	fakeGo := "#!/bin/sh\necho \"go $*\" >>" + calls + "\nexit 1\n"
	if err := os.WriteFile(filepath.Join(fakeBin, "go"), []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}

	// The make line's arguments, with its cache directory replaced by ours.
	script := append([]string{}, args[1:len(args)-1]...)
	script = append(script, cache)
	cmd := exec.Command("bash", script...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PATH="+fakeBin+":"+os.Getenv("PATH"), "NRI_VOLUMES_TEST_CACHE="+cache)
	out, err = cmd.CombinedOutput()
	got, _ := os.ReadFile(calls)
	if err != nil {
		t.Fatalf("%s (as make demo runs it): %v\n%s\ngo was called:\n%s", strings.Join(script, " "), err, out, got)
	}
	if len(got) != 0 {
		t.Errorf("the demo's runtime install ran go although containerd, runc and crictl were cached:\n%s", got)
	}
	for _, p := range []string{"kubelet", "containerd-old"} {
		if _, err := os.Stat(filepath.Join(cache, p)); err == nil {
			t.Errorf("the demo's runtime install made %s", p)
		}
	}
}
