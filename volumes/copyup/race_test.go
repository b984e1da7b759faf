package copyup

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
)

// TestCopyRacingSymlinkSwap plays a sibling container that shares the volume
// being copied into: while Copy runs, it swaps each directory Copy makes in
// the destination for a symlink to a host directory, and back. Copy may fail,
// but it must never write through the symlink.
func TestCopyRacingSymlinkSwap(t *testing.T) {
	base := t.TempDir()
	rootfs, host := filepath.Join(base, "rootfs"), filepath.Join(base, "host")
	for _, d := range []string{host, filepath.Join(rootfs, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(host, "passwd"), []byte("root:x:0:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := []string{"a", "b", "c", "d"}
	for _, d := range dirs {
		for i := 0; i < 200; i++ {
			p := filepath.Join(rootfs, "data", d, fmt.Sprintf("sub%d", i%4))
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(p, fmt.Sprintf("f%d", i)), []byte("image content"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := fstree.Snapshot(t, host)

	var swaps atomic.Int64
	for round := 0; round < 20; round++ {
		dst := filepath.Join(base, fmt.Sprintf("vol%d", round))
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, d := range dirs {
					p := filepath.Join(dst, d)
					if os.Rename(p, p+".away") == nil {
						if os.Symlink(host, p) == nil {
							swaps.Add(1)
							time.Sleep(50 * time.Microsecond)
							os.Remove(p)
						}
						os.Rename(p+".away", p)
					}
				}
			}
		}()
		_, _ = Copy(rootfs, "/data", dst, Options{})
		close(stop)
		wg.Wait()
	}
	fstree.Same(t, "the host directory", before, fstree.Snapshot(t, host))
	if swaps.Load() == 0 {
		t.Fatal("no swap happened while Copy ran; the test proved nothing")
	}
	t.Logf("%d swaps", swaps.Load())
}
