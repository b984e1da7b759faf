package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// TestFreezeOnlyTheVolume: a freeze goes only to a sized volume's own ext4.
// A descriptor of _data taken after another process unmounted it is the
// bare mount point on the store's file system; freezing that would hang
// every writer of the node. The guard refuses it, and holdVolume sees from
// the descriptor it holds, not the path, whether _data is the volume's.
// (The guard is tested directly: a failing freeze of the store's file
// system would hang the machine running the test.)
func TestFreezeOnlyTheVolume(t *testing.T) {
	requireLoop(t)
	s := openSizedAt(t, t.TempDir())
	if _, err := s.Create("default", "db", CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "db"}}, nil); err != nil {
		t.Fatal(err)
	}
	volDir := filepath.Join(s.root, "volumes", "default", "db")
	volFd, err := unix.Open(volDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(volFd)
	mounted, err := fsx.OpenDir(volFd, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mounted)
	if err := checkVolumeFileSystem(mounted, s.dev); err != nil {
		t.Fatalf("the mounted volume: %v", err)
	}
	if !dataIsMount(volFd, mounted) {
		t.Fatal("dataIsMount: the mounted _data is not the volume's")
	}

	// As another process's settle would: the file system goes from the
	// path, so a new open finds the bare mount point.
	if err := unix.Unmount(filepath.Join(volDir, dataDir), unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	bare, err := fsx.OpenDir(volFd, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(bare)
	if err := checkVolumeFileSystem(bare, s.dev); !errors.Is(err, ErrBusy) {
		t.Fatalf("the bare mount point on the store's file system: %v, want ErrBusy", err)
	}
	if dataIsMount(volFd, bare) {
		t.Error("dataIsMount: the bare mount point counted as the volume's file system")
	}
	// What was opened before the unmount is still the volume's.
	if err := checkVolumeFileSystem(mounted, s.dev); err != nil {
		t.Errorf("the descriptor held across the unmount: %v", err)
	}
	other, err := os.Open("/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := checkVolumeFileSystem(int(other.Fd()), s.dev); !errors.Is(err, ErrBusy) {
		t.Errorf("a file system that is not ext4: %v, want ErrBusy", err)
	}
}
