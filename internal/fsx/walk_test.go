package fsx

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// deepLevels is deeper than the descriptor limit the child runs under and
// than PATH_MAX in characters: no walk that holds a descriptor per level or
// builds full paths can get through it.
const (
	deepLevels = 300
	childLimit = 64
)

// openDirDev opens directory dir for the walks and returns its descriptor,
// which the caller closes, and the device the walks must stay on.
func openDirDev(t *testing.T, dir string) (int, uint64) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	return fd, st.Dev
}

// buildDeep makes, below dir, a chain of deepLevels directories. Each level
// also holds files, a symlink to "/", a hard link to a file of the level
// above and a leaf directory listed after the chain, so a walk must resume a
// listing after climbing back.
func buildDeep(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 16)
	for i := range deepLevels {
		for _, f := range []string{"f1", "f2", "f3"} {
			ffd, err := unix.Openat(fd, f, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			unix.Write(ffd, []byte(strings.Repeat("x", 5000+i)))
			unix.Close(ffd)
		}
		if err := unix.Symlinkat("/", fd, "root-link"); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mkdirat(fd, "zz-leaf", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Linkat(fd, "f1", next, "hardlink", 0); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		fd = next
	}
	unix.Close(fd)
}

// duBytes is what du(1) counts below dir, dir itself left out.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "-B1", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return n - st.Blocks*512
}

// TestDeepTreeUnderLowDescriptorLimit measures and removes a tree deeper than
// the process's RLIMIT_NOFILE, in a child process that runs under that limit.
func TestDeepTreeUnderLowDescriptorLimit(t *testing.T) {
	if dir := os.Getenv("FSX_DEEP_CHILD"); dir != "" {
		deepChild(t, dir)
		return
	}
	dir := t.TempDir()
	buildDeep(t, dir)
	want := duBytes(t, dir)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeepTreeUnderLowDescriptorLimit$", "-test.v")
	cmd.Env = append(os.Environ(), "FSX_DEEP_CHILD="+dir, "FSX_DEEP_WANT="+strconv.FormatInt(want, 10))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child under RLIMIT_NOFILE=%d: %v\n%s", childLimit, err, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("RemoveContents left %d entries, first %q", len(entries), entries[0].Name())
	}
}

func deepChild(t *testing.T, dir string) {
	lim := unix.Rlimit{Cur: childLimit, Max: childLimit}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fd, dev := openDirDev(t, dir)
	defer unix.Close(fd)
	got, err := DiskUsage(fd, dev)
	if err != nil {
		t.Fatalf("DiskUsage: %v", err)
	}
	if want := os.Getenv("FSX_DEEP_WANT"); fmt.Sprint(got) != want {
		t.Errorf("DiskUsage = %d, du says %s", got, want)
	}
	// The chain's first directory goes through RemoveAll, the rest of the
	// level through RemoveContents.
	if err := RemoveAll(fd, strings.Repeat("d", 16), dev); err != nil {
		t.Fatalf("RemoveAll: %v", err)
	}
	if err := RemoveContents(fd, dev); err != nil {
		t.Fatalf("RemoveContents: %v", err)
	}
}

// TestRemoveRefusesMount refuses to descend into a directory on another
// device and leaves the mount's content alone.
func TestRemoveRefusesMount(t *testing.T) {
	testutil.RequireRoot(t, "needs root to mount a tmpfs")
	dir := t.TempDir()
	mnt := dir + "/a/b/mnt"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	if err := os.WriteFile(mnt+"/keep", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, dev := openDirDev(t, dir)
	defer unix.Close(fd)
	err := RemoveAll(fd, "a", dev)
	if !errors.Is(err, ErrOtherFS) || !strings.Contains(err.Error(), "b/mnt") {
		t.Fatalf("RemoveAll across a mount: %v, want ErrOtherFS naming b/mnt", err)
	}
	if _, err := os.Stat(mnt + "/keep"); err != nil {
		t.Fatalf("the mount's content is gone: %v", err)
	}
}

// TestCount counts entries, files and bytes the way copy-up does (each
// hard-linked inode's bytes once, every name an entry), stops at the bound,
// and refuses what copy-up would leave out.
func TestCount(t *testing.T) {
	dir := t.TempDir()
	for path, data := range map[string]string{"a": "12345", "sub/b": "123", "sub/deeper/c": ""} {
		if err := os.MkdirAll(dir+"/"+path[:max(strings.LastIndex(path, "/"), 0)], 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/"+path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(dir+"/a", dir+"/sub/a-link"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", dir+"/sub/passwd"); err != nil {
		t.Fatal(err)
	}
	count := func(max int64) (Tally, error) {
		fd, dev := openDirDev(t, dir)
		defer unix.Close(fd)
		return Count(fd, dev, max)
	}
	// a, sub, sub/b, sub/deeper, sub/deeper/c, sub/a-link, sub/passwd
	want := Tally{Entries: 7, Files: 3, Bytes: 8}
	if got, err := count(7); err != nil || got != want {
		t.Fatalf("Count(7) = %+v, %v; want %+v", got, err, want)
	}
	if _, err := count(6); !errors.Is(err, ErrTooMany) {
		t.Fatalf("Count(6) = %v, want ErrTooMany", err)
	}
	if err := unix.Mkfifo(dir+"/sub/deeper/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := count(100); !errors.Is(err, ErrSpecial) || !strings.Contains(err.Error(), "sub/deeper/fifo") {
		t.Fatalf("Count with a fifo = %v, want ErrSpecial naming it", err)
	}
}
