package harness

import (
	"os"
	"os/exec"
	"path/filepath"
)

// BuildStaticPluginTo builds ./cmd/nri-volumes and ./cmd/nri-volumes-hook
// with cgo off into dir, binaries that run in a container image with no
// libc, and returns the path of nri-volumes; the hook is beside it.
// $NRI_VOLUMES_TEST_PLUGIN is not used: a release build need not be static.
func BuildStaticPluginTo(dir string) (string, error) {
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
