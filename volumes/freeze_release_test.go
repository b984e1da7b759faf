package volumes

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// freezeAndKill runs a child process that snapshots default/db of the store
// at root and kills it with SIGKILL while it holds the volume frozen.
func freezeAndKill(t *testing.T, s *Store, root string) {
	t.Helper()
	_, kill := startFrozenChild(t, s, root)
	kill()
}

// startFrozenChild runs a child process that snapshots default/db of the
// store at root, and returns once it holds the volume frozen: the path of
// its freeze marker, and kill, which kills it with SIGKILL and waits for it.
// kill may be called more than once; the test's cleanup calls it too.
func startFrozenChild(t *testing.T, s *Store, root string) (marker string, kill func()) {
	t.Helper()
	child := exec.Command(os.Args[0], "-test.run=^TestSnapshotChild$", "-test.v")
	child.Env = append(os.Environ(), snapshotChildEnv+"="+root, holdFrozenEnv+"=1h")
	var out strings.Builder
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			_ = child.Process.Signal(unix.SIGKILL)
			_ = child.Wait()
		})
	}
	t.Cleanup(kill)
	marker = filepath.Join(s.dir, frozenDir, frozenMarker("default", "db"))
	for end := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(marker); err == nil {
			return marker, kill
		}
		if time.Now().After(end) {
			t.Fatalf("no freeze marker after 30s; child said:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeWithin writes path in a goroutine and fails the test if that takes
// more than 30 s: the file system is still frozen.
func writeWithin(t *testing.T, path string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- os.WriteFile(path, []byte("x"), 0o644) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("writing %s hangs: the volume is still frozen", path)
	}
}

// TestFrozenThenReleased: a snapshot is killed while it holds a volume
// frozen, and the volume's last container goes before anything thaws it,
// which unmounts the frozen file system lazily; it lives on with its loop
// device, and the next use of the volume would mount it again, frozen. The
// next Open thaws it through that loop device, so the next user can write.
func TestFrozenThenReleased(t *testing.T) {
	requireLoop(t)
	root := t.TempDir()
	s := openSizedAt(t, root)
	if _, err := s.Create("default", "db", CreateOptions{Size: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "db"}}, nil); err != nil {
		t.Fatal(err)
	}
	freezeAndKill(t, s, root)
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	vols, _, err := s2.Acquire("next", []Request{{Namespace: "default", Name: "db"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeWithin(t, filepath.Join(vols[0].Mountpoint, "after"))
	if err := s2.Release("next"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.dir, frozenDir)); len(entries) != 0 {
		t.Errorf("left in %s: %v", frozenDir, entries)
	}
}

// TestThawerInALongRunningStore: the plugin opened its store long before a
// CLI was killed while it held a volume frozen; its thawer thaws the volume
// without any other process opening the store.
func TestThawerInALongRunningStore(t *testing.T) {
	requireLoop(t)
	root := t.TempDir()
	s := openSizedAt(t, root)
	s.Start(Thawer(20 * time.Millisecond))
	if _, err := s.Create("default", "db", CreateOptions{Size: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "db"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	freezeAndKill(t, s, root)
	writeWithin(t, filepath.Join(vols[0].Mountpoint, "after"))
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
}
