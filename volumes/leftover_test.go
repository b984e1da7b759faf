package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// TestOpenDeactivatesMountedTmp: a plugin killed between taking a formatted
// image (mounted, for a container) and naming it leaves a .tmp- entry in the
// namespace whose _data is a mount. The next Open takes that file system
// down before it moves the entry into the trash, so the mount, the loop
// device and disk.img do not outlive it.
func TestOpenDeactivatesMountedTmp(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	if _, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "big", CreateOptions: CreateOptions{Size: 64 << 20}}}, nil); err != nil {
		t.Fatal(err)
	}
	nsDir := filepath.Join(s.dir, "default")
	if err := os.Rename(filepath.Join(nsDir, "big"), filepath.Join(nsDir, tmpPrefix+"big")); err != nil {
		t.Fatal(err)
	}
	if m, _ := fsx.MountsUnder(nsDir); len(m) != 1 {
		t.Fatalf("the renamed entry has %d mounts under %s, want 1", len(m), nsDir)
	}
	s.Close()
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if m, _ := fsx.MountsUnder(s.dir); len(m) != 0 {
		t.Errorf("after Open the store still has mounts: %v", m)
	}
	if names, _ := os.ReadDir(nsDir); len(names) != 0 {
		t.Errorf("after Open the namespace holds %v, want nothing", names)
	}
	// The loop device goes with its last mount (autoclear), when the
	// kernel is done with it: waited for, not timed.
	for deadline := time.Now().Add(30 * time.Second); len(loopsOf(s.dir)) > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if l := loopsOf(s.dir); len(l) != 0 {
		t.Errorf("loop devices still bound to the store's images: %s", strings.Join(l, " "))
	}
}
