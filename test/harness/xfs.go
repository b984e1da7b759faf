package harness

import (
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// LoopXFS makes an xfs with reflinks (mkfs.xfs -m reflink=1) of size bytes
// in a sparse file below dir, mounts it through a loop device and returns
// the mount point; t's cleanup unmounts it. It needs root and mkfs.xfs
// (xfsprogs).
func LoopXFS(t TB, dir string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatalf("%v", err)
	}
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount the xfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}
