package plugin_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// copyUpChildEnv makes the test binary a child that starts copying into the
// volume shop/shared of the store at its value, says "half" on stdout and
// waits to be killed, as a copy-up hook killed mid-copy does.
const copyUpChildEnv = "NRI_VOLUMES_PLUGIN_COPYUP_CHILD_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(copyUpChildEnv); root != "" {
		s, err := volumes.Open(root)
		if err == nil {
			err = s.CopyUps().Copy("shop", "shared", func(dir string) error {
				if err := os.WriteFile(filepath.Join(dir, "first"), []byte("image"), 0o644); err != nil {
					return err
				}
				fmt.Println("half")
				select {}
			})
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanUpBenchmarks()
	os.Exit(code)
}

// TestInterruptedCopyUpGetsTheHookAgain: a copy-up hook killed in the middle
// of its copy leaves the volume needing one, and the next container that
// mounts it gets the hook again, though the store is not empty of traces.
func TestInterruptedCopyUpGetsTheHookAgain(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	if _, err := rt.store().Create("shop", "shared", volumes.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), copyUpChildEnv+"="+rt.cfg.Root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if line != "half\n" {
		t.Fatalf("copy-up child said %q, %v", line, err)
	}

	pod := newPod("p1", "shop", map[string]string{plugin.VolumesKey + "/pod": "- shared:/data"})
	adj, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err != nil {
		t.Fatal(err)
	}
	hooks := adj.GetHooks().GetCreateRuntime()
	if len(hooks) != 1 || !slices.Contains(hooks[0].Args, "shop/shared=/data") {
		t.Fatalf("createRuntime hooks after an interrupted copy-up = %+v, want the copy-up of shop/shared", hooks)
	}
	// The hook charges the pod's copy-up budget (limits.copyUpMaxSizePerPod).
	if i := slices.Index(hooks[0].Args, "--pod"); i < 0 || hooks[0].Args[i+1] != "p1" || !slices.Contains(hooks[0].Args, "--pod-max-bytes") {
		t.Errorf("copy-up hook without the pod's budget: %v", hooks[0].Args)
	}
}
