package volumes

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// requireLoop skips a test that needs root, loop devices and mkfs.ext4.
func requireLoop(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat(sizer.LoopControl); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4 (e2fsprogs)")
	}
}

// openSized opens a store in a fresh directory and unmounts whatever the
// test leaves mounted in it, so a failed test leaks no loop device.
func openSized(t *testing.T) (*Store, string) {
	t.Helper()
	root := t.TempDir()
	return openSizedAt(t, root), root
}

// statfsAcquired acquires volume name of namespace default for container
// ctr-NAME and returns what statfs says of its mount: what df shows in it.
func statfsAcquired(t *testing.T, s *Store, name string) unix.Statfs_t {
	t.Helper()
	vols, _, err := s.Acquire("ctr-"+name, []Request{{Namespace: "default", Name: name}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(vols[0].Mountpoint, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// loopsOf returns the loop devices whose backing file is below dir.
func loopsOf(dir string) []string {
	var out []string
	for dev, backing := range sizer.BoundLoops() {
		if strings.HasPrefix(backing, dir+"/") {
			out = append(out, dev+"="+backing)
		}
	}
	return out
}

func writeBytes(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for n > 0 {
		k := min(n, len(buf))
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		n -= k
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestSizedImageVolume follows a 10 MiB image volume through its life: it
// is recorded with its size, comes up when a container acquires it, stops a
// 20 MiB write with ENOSPC, is measured without a walk, goes down when its
// last user goes and keeps its data, and leaves no loop device or mount when
// removed.
func TestSizedImageVolume(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	const size = 10 << 20
	v, err := s.Create("default", "small", CreateOptions{Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if v.Limit != size || v.Backend != BackendImage {
		t.Fatalf("created volume has Limit %d, Backend %q", v.Limit, v.Backend)
	}
	meta, err := os.ReadFile(filepath.Join(root, "volumes", "default", "small", "volume.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(meta, &rec); err != nil || rec["Limit"] != float64(size) || rec["Backend"] != "image" {
		t.Fatalf("volume.json = %s (%v)", meta, err)
	}
	if s.isMountedLocked("default", "small") {
		t.Fatal("a sized volume is mounted before any container uses it")
	}

	vols, _, err := s.Acquire("ctr1", []Request{{Namespace: "default", Name: "small"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := vols[0].Mountpoint
	var st unix.Statfs_t
	if err := unix.Statfs(data, &st); err != nil {
		t.Fatal(err)
	}
	if total := int64(st.Blocks) * st.Bsize; total < size || total > size*11/10 {
		t.Errorf("statfs of _data shows %d bytes, want about %d", total, size)
	}
	if names, _ := os.ReadDir(data); len(names) != 0 {
		t.Errorf("a new sized volume is not empty: %v", names)
	}
	err = writeBytes(filepath.Join(data, "big"), 20<<20)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing 20 MiB into a 10 MiB volume: %v, want ENOSPC", err)
	}
	os.Remove(filepath.Join(data, "big"))
	if err := writeBytes(filepath.Join(data, "keep"), 3<<20); err != nil {
		t.Fatal(err)
	}
	used, err := s.Size(vols[0])
	if err != nil || used < 3<<20 || used > 4<<20 {
		t.Errorf("Size of a volume holding 3 MiB = %d, %v", used, err)
	}

	if err := s.Release("ctr1"); err != nil {
		t.Fatal(err)
	}
	if s.isMountedLocked("default", "small") {
		t.Error("the volume stays mounted after its last user released it")
	}
	got, err := s.Get("default", "small")
	if err != nil {
		t.Fatal(err)
	}
	if unmounted, err := s.Size(got); err != nil || unmounted < 3<<20 || unmounted > 4<<20 {
		t.Errorf("Size of the unmounted volume = %d, %v, want about 3 MiB", unmounted, err)
	}
	if _, _, err := s.Acquire("ctr2", []Request{{Namespace: "default", Name: "small"}}, nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(data, "keep")); err != nil || fi.Size() != 3<<20 {
		t.Errorf("data after a second mount: %v", err)
	}
	if err := s.Remove("default", "small"); !errors.Is(err, ErrInUse) {
		t.Errorf("Remove of a volume in use: %v", err)
	}
	if err := s.Release("ctr2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("default", "small"); err != nil {
		t.Fatal(err)
	}
	if m, _ := fsx.MountsUnder(s.dir); len(m) != 0 {
		t.Errorf("mounts left after Remove: %v", m)
	}
	if l := loopsOf(s.dir); len(l) != 0 {
		t.Errorf("loop devices left after Remove: %v", l)
	}
}

// TestSizedVolumeAfterReboot unmounts everything, as a reboot does, and
// checks that the next use brings the data and the limit back.
func TestSizedVolumeAfterReboot(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	if _, err := s.Create("default", "v", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("ctr1", []Request{{Namespace: "default", Name: "v"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := vols[0].Mountpoint
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("survives"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := unix.Unmount(data, 0); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	// The container of before the reboot is gone: a new one uses the volume.
	if err := s2.SetReferences(nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s2.Acquire("ctr2", []Request{{Namespace: "default", Name: "v"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(data, "f")); err != nil || string(got) != "survives" {
		t.Errorf("after the reboot f = %q, %v", got, err)
	}
	if err := writeBytes(filepath.Join(data, "big"), 16<<20); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("after the reboot a 16 MiB write into 8 MiB: %v, want ENOSPC", err)
	}
}

// TestSizedCrashBeforeRecording leaves a sized volume mounted with no user,
// as a process that died between mounting it and recording its container
// would, and checks that the next Open takes it down and that Check reports
// a mount nothing accounts for without touching it.
func TestSizedCrashBeforeRecording(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	v, err := s.Create("default", "v", CreateOptions{Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	err = s.withLock(unix.LOCK_EX, func() error { return s.activateLocked(v) })
	if err != nil {
		t.Fatal(err)
	}
	if !s.isMountedLocked("default", "v") {
		t.Fatal("activate mounted nothing")
	}
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.isMountedLocked("default", "v") {
		t.Error("Open left a sized volume mounted that no container uses")
	}

	stray := filepath.Join(s.dir, "default", "v", "stray")
	if err := os.Mkdir(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", stray, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(stray, unix.MNT_DETACH)
	probs, err := s2.Check()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range probs {
		found = found || strings.Contains(p.Reason, stray) && p.Namespace == "default" && p.Name == "v"
	}
	if !found {
		t.Errorf("Check did not report the mount at %s: %+v", stray, probs)
	}
	if !s2.isMountedLocked("default", "v") && !hasMountsUnder(stray) {
		t.Error("Check changed the mounts")
	}
}

func hasMountsUnder(p string) bool {
	m, _ := fsx.MountsUnder(p)
	return len(m) > 0
}

// TestSizedNamespaceBudget checks limits.namespaceBytes: the sizes of a
// namespace's volumes add up to at most the budget, other namespaces have
// their own, and the refusal names the key and the numbers.
func TestSizedNamespaceBudget(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	s.Reconfigure(WithSizePolicy(SizePolicy{NamespaceBytes: 24 << 20}))
	if _, err := s.Create("shop", "a", CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("shop", "unsized", CreateOptions{}); err != nil {
		t.Fatalf("an unsized volume counts against the budget: %v", err)
	}
	_, err := s.Create("shop", "b", CreateOptions{Size: 16 << 20})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("a volume over the budget: %v, want ErrLimit", err)
	}
	for _, want := range []string{"limits.namespaceBytes", "24MiB", "32MiB", "16MiB", `"shop"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, err := s.Get("shop", "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused volume exists: %v", err)
	}
	if _, err := s.Create("default", "b", CreateOptions{Size: 16 << 20}); err != nil {
		t.Errorf("another namespace's budget is its own: %v", err)
	}
	_, _, err = s.Acquire("ctr", []Request{{Namespace: "shop", Owner: &Owner{PodSandboxID: "pod", Container: "c", Target: "/d"}, CreateOptions: CreateOptions{Size: 16 << 20}}}, nil)
	if !errors.Is(err, ErrLimit) {
		t.Errorf("an anonymous volume over the budget: %v, want ErrLimit", err)
	}
}

// TestSizedGrow grows a volume that no container uses (offline) and, where
// the kernel lets this process (CAP_SYS_RESOURCE), one in use (online); it
// refuses to shrink one.
func TestSizedGrow(t *testing.T) {
	requireLoop(t)
	for _, tool := range []string{"resize2fs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	s, root := openSized(t)
	if _, err := s.Create("default", "g", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "g"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := vols[0].Mountpoint
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grow("default", "g", 4<<20); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "shrink") {
		t.Errorf("shrinking: %v", err)
	}
	if hasCapSysResource() {
		if _, err := s.Grow("default", "g", 16<<20); err != nil {
			t.Fatalf("growing in use: %v", err)
		}
		checkShows(t, data, 16<<20)
	}
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	v, err := s.Grow("default", "g", 32<<20)
	if err != nil {
		t.Fatal(err)
	}
	if v.Limit != 32<<20 {
		t.Errorf("Limit after Grow = %d", v.Limit)
	}
	if _, _, err := s.Acquire("ctr2", []Request{{Namespace: "default", Name: "g"}}, nil); err != nil {
		t.Fatal(err)
	}
	checkShows(t, data, 32<<20)
	if err := writeBytes(filepath.Join(data, "big"), 20<<20); err != nil {
		t.Errorf("a 20 MiB write after growing to 32 MiB: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(data, "f")); string(got) != "kept" {
		t.Errorf("data after growing: %q", got)
	}
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if v, err := s2.Get("default", "g"); err != nil || v.Limit != 32<<20 {
		t.Errorf("reopened: %+v, %v", v, err)
	}
	if _, err := s.Grow("default", "missing", 1<<30); !errors.Is(err, ErrNotFound) {
		t.Errorf("growing a missing volume: %v", err)
	}
}

// checkShows checks that the file system at dir shows about size bytes.
func checkShows(t *testing.T, dir string, size int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if total := int64(st.Blocks) * st.Bsize; total < size*98/100 || total > size*11/10 {
		t.Errorf("statfs of %s shows %d bytes, want about %d", dir, total, size)
	}
}

func hasCapSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0
}

// TestSizedBackendBtrfsOffBtrfs checks that forcing the btrfs backend on a
// store that is not on btrfs refuses the volume, naming the key, and leaves
// nothing.
func TestSizedBackendBtrfsOffBtrfs(t *testing.T) {
	s, _ := openSized(t)
	if sizer.OnBtrfs(s.dirFd) {
		t.Skip("the temporary directory is on btrfs")
	}
	s.Reconfigure(WithSizePolicy(SizePolicy{Backend: BackendBtrfs}))
	_, err := s.Create("default", "v", CreateOptions{Size: 8 << 20})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "sizes.backend is btrfs") {
		t.Fatalf("Create: %v", err)
	}
	if names, _ := os.ReadDir(filepath.Join(s.dir, "default")); len(names) != 0 {
		t.Errorf("left behind: %v", names)
	}
}

// TestSizedShowsExactSize checks that df in a new sized volume shows its
// size, not a block more: statfs's f_blocks times f_bsize, which df prints.
func TestSizedShowsExactSize(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	for _, size := range []int64{5 << 20, 10 << 20, 16 << 20, 100 << 20, 1 << 30, 40 << 30} {
		name := fmt.Sprintf("s%d", size>>20)
		if _, err := s.Create("default", name, CreateOptions{Size: size}); err != nil {
			t.Fatal(err)
		}
		st := statfsAcquired(t, s, name)
		if got := int64(st.Blocks) * st.Bsize; got != size {
			t.Errorf("df in a volume of %s shows %d KiB, want %d", FormatBytes(size), got>>10, size>>10)
		}
	}
}
