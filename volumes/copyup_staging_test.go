package volumes

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// copyUpChildEnv makes the test binary a child that starts a copy-up into
// volume default/v, announces "half" on stdout half-way and waits to be
// killed.
const copyUpChildEnv = "NRI_VOLUMES_COPYUP_CHILD_ROOT"

const copyUpFiles = 100

// fillImage writes the copyUpFiles files an image would hold, calling half
// once half of them are written.
func fillImage(dir string, half func()) error {
	for i := range copyUpFiles {
		if i == copyUpFiles/2 && half != nil {
			half()
		}
		if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), []byte("image"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyUpChild(root string) int {
	s, err := Open(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = s.CopyUps().Copy("default", "v", func(dir string) error {
		return fillImage(dir, func() {
			fmt.Println("half")
			select {}
		})
	})
	fmt.Fprintln(os.Stderr, "copy-up returned:", err)
	return 1
}

func dataNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestCopyUpKilledMidCopyIsRedone kills a process in the middle of a copy-up:
// the volume shows none of the half copy, and the next copy-up copies
// everything.
func TestCopyUpKilledMidCopyIsRedone(t *testing.T) {
	s, root := newStore(t)
	v, err := s.Create("default", "v", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), copyUpChildEnv+"="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "half\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	if names := dataNames(t, v.Mountpoint); len(names) != 0 {
		t.Errorf("after the kill the volume holds %d entries of a half copy, want none: %v", len(names), names[:min(len(names), 5)])
	}
	calls := 0
	if err := s.CopyUps().Copy("default", "v", func(dir string) error { calls++; return fillImage(dir, nil) }); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("copy-up after the kill ran %d times, want 1", calls)
	}
	names := dataNames(t, v.Mountpoint)
	if len(names) != copyUpFiles {
		t.Errorf("after the redo the volume holds %d entries, want %d", len(names), copyUpFiles)
	}
	if !slices.Contains(names, "f0") || !slices.Contains(names, "f99") {
		t.Errorf("after the redo the volume holds %v", names)
	}
}

// TestCopyUpFailureKeepsOthersData: a container that shares a named volume
// writes into it while another container's copy-up runs, and that copy-up
// fails. Only what the copy made goes; the other container's file stays.
func TestCopyUpFailureKeepsOthersData(t *testing.T) {
	s, _ := newStore(t)
	v, err := s.Create("default", "shared", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = s.CopyUps().Copy("default", "shared", func(dir string) error {
		writeFile(t, filepath.Join(v.Mountpoint, "written-by-other"), "precious")
		writeFile(t, filepath.Join(dir, "from-image", "half"), "x")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("CopyUp = %v, want boom", err)
	}
	if names := dataNames(t, v.Mountpoint); !slices.Equal(names, []string{"written-by-other"}) {
		t.Errorf("after the failed copy-up the volume holds %v, want only written-by-other", names)
	}
}

// TestCopyUpIntoMountedData: when _data is a mount of its own (a sized
// volume's filesystem), staging lives inside it, since entries cannot be
// renamed across filesystems, and leaves nothing behind.
func TestCopyUpIntoMountedData(t *testing.T) {
	testutil.RequireRoot(t, "needs root to mount a tmpfs")
	s, _ := newStore(t)
	v, err := s.Create("default", "sized", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", v.Mountpoint, "tmpfs", 0, "size=4m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(v.Mountpoint, unix.MNT_DETACH)
	err = s.CopyUps().Copy("default", "sized", func(dir string) error {
		if filepath.Dir(dir) != v.Mountpoint {
			return fmt.Errorf("staging %s is not inside the mounted _data", dir)
		}
		return fillImage(dir, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if names := dataNames(t, v.Mountpoint); len(names) != copyUpFiles || slices.Contains(names, copyUpStaging) {
		t.Errorf("_data holds %d entries (staging left: %v), want the %d copied", len(names), slices.Contains(names, copyUpStaging), copyUpFiles)
	}
}
