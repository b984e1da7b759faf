package harness

import (
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// LoopBtrfs makes a btrfs of size bytes in a sparse file below dir, mounts it
// through a loop device and returns the mount point; t's cleanup unmounts
// it. It needs root and mkfs.btrfs (btrfs-progs).
func LoopBtrfs(t TB, dir string, size int64) string {
	t.Helper()
	return loopFS(t, dir, size, "btrfs", "-q")
}

// LoopXFS makes an xfs with reflinks (mkfs.xfs -m reflink=1) of size bytes
// in a sparse file below dir, mounts it through a loop device and returns
// the mount point; t's cleanup unmounts it. It needs root and mkfs.xfs
// (xfsprogs).
func LoopXFS(t TB, dir string, size int64) string {
	t.Helper()
	return loopFS(t, dir, size, "xfs", "-q", "-m", "reflink=1")
}

// loopFS makes a file system of type fs (mkfs.FS with mkfsArgs) in the
// sparse file dir/FS.img of size bytes and mounts it on dir/mnt through a
// loop device; t's cleanup unmounts it.
func loopFS(t TB, dir string, size int64, fs string, mkfsArgs ...string) string {
	t.Helper()
	img := filepath.Join(dir, fs+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatalf("%v", err)
	}
	if out, err := exec.Command("mkfs."+fs, append(mkfsArgs, img)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s: %v: %s", fs, err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount the %s: %v: %s", fs, err, out)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}
