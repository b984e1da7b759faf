package fsx

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// TestOpenInRootFallback runs the resolver used without openat2 on hostile
// targets: every symlink and ".." resolves inside the root, never on the host.
func TestOpenInRootFallback(t *testing.T) {
	top := t.TempDir()
	rootfs := filepath.Join(top, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "etc", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A host directory next to the rootfs, which no target may reach.
	if err := os.MkdirAll(filepath.Join(top, "etc", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for target, name := range map[string]string{"/": "root", "../../../..": "up", "/etc": "a", top: "host"} {
		if err := os.Symlink(target, filepath.Join(rootfs, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rootFd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rootFd)
	for _, tc := range []struct {
		target  string
		wantDir string // below rootfs; "" for ENOENT/ENOTDIR
	}{
		{"/root/etc", "etc"},
		{"/up/etc", "etc"},
		{"/a", "etc"},
		{"/a/x", "etc/x"},
		{"/../../etc/", "etc"},
		{"/host/rootfs", ""},
		{"/file", ""},
		{"/file/x", ""},
	} {
		t.Run(tc.target, func(t *testing.T) {
			fd, err := openInRootFallback(rootFd, tc.target)
			if tc.wantDir == "" {
				if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
					t.Fatalf("want ENOENT or ENOTDIR, got fd %d, %v", fd, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			var got, want unix.Stat_t
			if err := unix.Fstat(fd, &got); err != nil {
				t.Fatal(err)
			}
			if err := unix.Stat(filepath.Join(rootfs, tc.wantDir), &want); err != nil {
				t.Fatal(err)
			}
			if got.Ino != want.Ino || got.Dev != want.Dev {
				t.Errorf("opened inode %d, want %s (%d)", got.Ino, tc.wantDir, want.Ino)
			}
		})
	}
}

// TestMountsUnder finds a mount whose point mountinfo escapes, and
// UnmountUnder leaves none below the directory.
func TestMountsUnder(t *testing.T) {
	testutil.RequireRoot(t, "needs root to mount a tmpfs")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "a b", "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mnt, mnt} { // one mount on top of another
		if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { UnmountUnder(dir) })
	got, err := MountsUnder(dir)
	if err != nil || len(got) != 2 || got[0] != mnt || got[1] != mnt {
		t.Fatalf("MountsUnder = %q, %v; want %q twice", got, err, mnt)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := MountsUnder(dir); err != nil || len(got) != 0 {
		t.Fatalf("after UnmountUnder: %q, %v", got, err)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":              "/plain",
		`/with\040space`:      "/with space",
		`/tab\011and\134back`: "/tab\tand\\back",
		`/short\04`:           `/short\04`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
