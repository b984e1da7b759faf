package snapfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// sparseFile makes a 64 MiB file with 1 MiB of data at 0 and at 40 MiB,
// holes elsewhere.
func sparseFile(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("data"), 1<<18)
	for _, off := range []int64{0, 40 << 20} {
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestCloneFileKeepsHoles: where FICLONE is refused (ext4 and tmpfs have no
// reflinks), CloneFile copies the data and leaves the holes holes.
func TestCloneFileKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	want := sparseFile(t, src)
	if allocated(t, src) >= 8<<20 {
		t.Skip("this file system does not keep holes")
	}
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)
	dfd, err := unix.Open(dst, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	m, err := CloneFile(dfd, sfd)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the copy differs from the source (%v)", err)
	}
	if m == SparseCopy && allocated(t, dst) > 4<<20 {
		t.Errorf("the copy allocates %d bytes for 2 MiB of data: holes were filled", allocated(t, dst))
	}
	if m == SparseCopy {
		if err := ReflinkFile(dfd, sfd); !errors.Is(err, ErrNoReflink) {
			t.Errorf("ReflinkFile where CloneFile copied: %v, want ErrNoReflink", err)
		}
	}
}

// TestThawNotFrozen: thawing a file system that is not frozen says so.
func TestThawNotFrozen(t *testing.T) {
	testutil.RequireRoot(t, "FITHAW needs CAP_SYS_ADMIN")
	fd, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := Thaw(fd); !errors.Is(err, ErrNotFrozen) {
		t.Errorf("Thaw of a file system not frozen: %v, want ErrNotFrozen", err)
	}
}
