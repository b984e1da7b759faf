package volumes

import (
	"io"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

const reviewExportChildEnv = "NRI_VOLUMES_REVIEW_EXPORT_ROOT"

// TestReviewExportDeepTree: fsx promises that a container nesting
// directories deeper than RLIMIT_NOFILE cannot make a walk fail, and ls -s,
// rm and copy-up keep it (TestDeepTreeUnderLowDescriptorLimit). volume
// export walks with one held descriptor per level (exporter.dir/entry
// recurse with defer Close), so the same volume cannot be exported.
func TestReviewExportDeepTree(t *testing.T) {
	if root := os.Getenv(reviewExportChildEnv); root != "" {
		lim := unix.Rlimit{Cur: deepChildLimit, Max: deepChildLimit}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		s, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.Export("default", "deep", io.Discard); err != nil {
			t.Fatalf("volume export under RLIMIT_NOFILE=%d: %v", deepChildLimit, err)
		}
		return
	}
	s, root := newStore(t)
	v, err := s.Create("default", "deep", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := buildDeepTree(v.Mountpoint); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReviewExportDeepTree$")
	cmd.Env = append(os.Environ(), reviewExportChildEnv+"="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("child: %v\n%s", err, out)
	}
}
