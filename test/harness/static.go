package harness

import (
	"os"
	"os/exec"
	"path/filepath"
)

// BuildStaticPluginTo builds ./cmd/nri-volumes with cgo off into dir, a
// binary that runs in a container image with no libc, and returns its path.
// $NRI_VOLUMES_TEST_PLUGIN is not used: a release build need not be static.
func BuildStaticPluginTo(dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "nri-volumes")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/nri-volumes")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", &CmdError{Args: cmd.Args, Stderr: string(b), Err: err}
	}
	return out, nil
}
