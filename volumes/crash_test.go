package volumes

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv makes the test binary a child that writes to the store at
// ROOT until it is killed.
const crashChildEnv = "NRI_VOLUMES_CRASH_CHILD_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(crashChildEnv); root != "" {
		os.Exit(crashChild(root))
	}
	if root := os.Getenv(deepChildEnv); root != "" {
		os.Exit(deepChild(root))
	}
	if root := os.Getenv(copyUpChildEnv); root != "" {
		os.Exit(copyUpChild(root))
	}
	os.Exit(m.Run())
}

// crashChild creates, uses, releases and removes volumes in a loop, every
// kind of write the store makes, until it is killed.
func crashChild(root string) int {
	s, err := Open(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// As in the plugin, new volumes and lists come from spares, made
	// meanwhile in the background.
	s.Start(Spares(func(err error) { fmt.Fprintln(os.Stderr, err) }))
	// Names carry the pid: a child of a later round meets the volumes of
	// earlier ones.
	pid := strconv.Itoa(os.Getpid())
	made := func(i int) string { return "made-" + strconv.Itoa(i) + "-" + pid }
	for i := 0; ; i++ {
		ctr := "ctr-" + pid + "-" + strconv.Itoa(i)
		named := "named-" + strconv.Itoa(i%7)
		owner := &Owner{PodSandboxID: "pod-" + strconv.Itoa(i%5), Container: "app", Target: "/data"}
		if _, err := s.Create("crash", made(i), CreateOptions{Labels: map[string]string{"i": strconv.Itoa(i)}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		// The named volume as the plugin makes it: synced after the
		// Acquire, as the plugin does before the container starts.
		if _, _, err := s.Acquire(ctr, []Request{{Namespace: "crash", Name: named, PersistLater: true}, {Namespace: "crash", Owner: owner}}, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := s.CopyUps().Persist("crash", named); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		_ = s.Release(ctr)
		_, _ = s.RemovePodVolumes(owner.PodSandboxID)
		_ = s.Remove("crash", made(i-3))
		_, _, _ = s.Prune(PruneOptions{Namespace: "crash", All: true, Filter: func(v *Volume) bool { return v.Name == named }})
	}
}

// TestKillDuringWrites kills a process at random moments while it writes to
// the store, then reopens the store: whatever moment the process died at,
// every volume is whole or absent, nothing is reported broken, and the store
// keeps working.
func TestKillDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes for a few seconds")
	}
	root := t.TempDir()
	seen := 0
	for round := 0; round < 12; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+root)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+rand.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != -1 {
			t.Fatalf("round %d: the child ended by itself (%v) instead of being killed", round, err)
		}

		s, err := Open(root)
		if err != nil {
			t.Fatalf("round %d: reopening: %v", round, err)
		}
		// What the kill left in the trash is the reaper's (or the next
		// CLI rm's) to delete; it does.
		if err := s.ReapTrash(); err != nil {
			t.Fatalf("round %d: ReapTrash: %v", round, err)
		}
		problems, err := s.Check()
		if err != nil || len(problems) != 0 {
			t.Fatalf("round %d: Check() = %+v, %v; want no problems", round, problems, err)
		}
		vols, err := s.List(ListOptions{Namespace: "crash"})
		if err != nil {
			t.Fatalf("round %d: List: %v", round, err)
		}
		seen = max(seen, len(vols))
		for _, v := range vols {
			if n, ok := strings.CutPrefix(v.Name, "made-"); ok && !strings.HasPrefix(n, v.Labels["i"]+"-") || v.CreatedAt.IsZero() {
				t.Fatalf("round %d: half-made volume %+v", round, v)
			}
			if _, err := os.Stat(v.Mountpoint); err != nil {
				t.Fatalf("round %d: volume %s without its _data: %v", round, v.Name, err)
			}
		}
		probe := "probe-" + strconv.Itoa(round)
		if _, err := s.Create("crash", probe, CreateOptions{}); err != nil {
			t.Fatalf("round %d: the store does not take writes after the kill: %v", round, err)
		}
		if err := s.Remove("crash", probe); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		s.Close()
	}
	if seen == 0 {
		t.Fatal("the children never got a volume made before they were killed; the test proved nothing")
	}
}
