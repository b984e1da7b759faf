package volumes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// startSpares starts the Spares worker of s and waits until its pool is full.
func startSpares(t *testing.T, s *Store) {
	t.Helper()
	s.Start(Spares(func(err error) { t.Errorf("spares: %v", err) }))
	waitSparesFull(t, s)
}

func waitSparesFull(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		vols, files := spareNames(s)
		if len(vols) == spareVolumesKept && len(files) == spareFilesKept {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool holds %d volume and %d file spares after 20s, want %d and %d", len(vols), len(files), spareVolumesKept, spareFilesKept)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func spareNames(s *Store) (vols, files []string) {
	s.enter(context.Background())
	defer s.leave()
	return slices.Clone(s.spare.vols), slices.Clone(s.spare.files)
}

func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// inodes returns the inode numbers of names in dir.
func inodes(t *testing.T, dir string, names []string) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	for _, n := range names {
		out[inodeOf(t, filepath.Join(dir, n))] = n
	}
	return out
}

func ownerMode(t *testing.T, path string) (uid, gid uint32, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode()
}

// A container's new volumes and lists are the spares, renamed, and hold
// exactly what they would without spares; the pool fills again.
func TestSparesMakeNewVolumes(t *testing.T) {
	s, root := newStore(t)
	startSpares(t, s)
	spares := filepath.Join(root, volumesDir, spareDir)
	vols, files := spareNames(s)
	volInodes, fileInodes := inodes(t, spares, vols), inodes(t, spares, files)

	uid, gid, mode := 1000, 2000, uint32(0o750)
	reqs := []Request{
		{Namespace: "default", Name: "data", CreateOptions: CreateOptions{Labels: map[string]string{"k": "v"}, UID: &uid, GID: &gid, Mode: &mode}},
		anon("pod1", "app", "/cache"),
	}
	got, _, err := s.Acquire("c1", reqs, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns := filepath.Join(root, volumesDir, "default")
	for _, v := range got {
		if _, ok := volInodes[inodeOf(t, filepath.Join(ns, v.Name))]; !ok {
			t.Errorf("volume %s is not one of the spares %v", v.Name, vols)
		}
	}
	for _, list := range []string{filepath.Join(root, volumesDir, refsDir, "c1"), filepath.Join(root, volumesDir, podsDir, "pod1")} {
		if _, ok := fileInodes[inodeOf(t, list)]; !ok {
			t.Errorf("list %s is not one of the spares %v", list, files)
		}
	}

	if u, g, m := ownerMode(t, filepath.Join(ns, "data", dataDir)); u != 1000 || g != 2000 || m != os.ModeDir|0o750 {
		t.Errorf("named volume's _data: %d:%d %v, want 1000:2000 drwxr-x---", u, g, m)
	}
	anonName := AnonymousName(*reqs[1].Owner)
	if u, g, m := ownerMode(t, filepath.Join(ns, anonName, dataDir)); u != 0 || g != 0 || m != os.ModeDir|0o755 {
		t.Errorf("anonymous volume's _data: %d:%d %v, want 0:0 drwxr-xr-x", u, g, m)
	}
	refs, err := os.ReadFile(filepath.Join(root, volumesDir, refsDir, "c1"))
	if want := "default/" + anonName + "\ndefault/data\n"; err != nil || string(refs) != want {
		t.Errorf("references of c1 = %q, %v; want %q", refs, err, want)
	}

	// What another process sees, from disk alone.
	other := openStore(t, root)
	v, err := other.Get("default", "data")
	if err != nil {
		t.Fatal(err)
	}
	if v.Labels["k"] != "v" || !slices.Equal(v.UsedBy, []string{"c1"}) || *v.UID != 1000 || v.Mode != "0750" {
		t.Errorf("Get = %+v (labels %v, used by %v)", v, v.Labels, v.UsedBy)
	}
	a, err := other.Get("default", anonName)
	if err != nil || !a.Anonymous || a.Owner.PodSandboxID != "pod1" {
		t.Errorf("anonymous volume: %+v, %v", a, err)
	}
	if probs, err := other.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check = %+v, %v; want no problems", probs, err)
	}

	waitSparesFull(t, s)
	if rest, _ := spareNames(s); len(slices.DeleteFunc(rest, func(n string) bool { return !slices.Contains(vols, n) })) != spareVolumesKept-2 {
		t.Errorf("after taking two, the pool holds %d of its earlier volume spares, want %d", len(rest), spareVolumesKept-2)
	}
}

// What an earlier process left in .spare is never used: a spare that
// process chowned before it died would give the next volume its owner.
func TestSparesOfAnEarlierProcessGoToTheTrash(t *testing.T) {
	root := t.TempDir()
	stale := filepath.Join(root, volumesDir, spareDir, "v-0000000000000000")
	writeFile(t, filepath.Join(stale, metaFile), `{"Name":"x"}`)
	if err := os.Mkdir(filepath.Join(stale, dataDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(stale, dataDir), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, root)
	startSpares(t, s)
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Fatalf("the earlier process's spare is still there: %v", err)
	}
	// Whichever spare it takes, a new volume is root's, mode 0755.
	for i := 0; i < spareVolumesKept; i++ {
		v, err := s.Create("default", "v"+string(rune('a'+i)), CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if u, g, m := ownerMode(t, v.Mountpoint); u != 0 || g != 0 || m != os.ModeDir|0o755 {
			t.Errorf("%s: _data %d:%d %v, want 0:0 drwxr-xr-x", v.Name, u, g, m)
		}
	}
}

// A spare that is not as this process made it (here, a volume.json that is a
// symlink) is never written through; the volume is made without it.
func TestSpareNotAsMadeIsNotUsed(t *testing.T) {
	s, root := newStore(t)
	startSpares(t, s)
	outside := filepath.Join(t.TempDir(), "victim")
	writeFile(t, outside, "keep")
	vols, files := spareNames(s)
	spares := filepath.Join(root, volumesDir, spareDir)
	for _, n := range vols {
		meta := filepath.Join(spares, n, metaFile)
		if err := os.Remove(meta); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, meta); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range files {
		if i >= len(files)-2 {
			// Taken first: not empty, as a spare written by a process
			// that died before it renamed it would be.
			writeFile(t, filepath.Join(spares, n), strings.Repeat("junk\n", 100))
			continue
		}
		if err := os.Remove(filepath.Join(spares, n)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(spares, n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "data"}, anon("pod1", "app", "/cache")}, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
		t.Fatalf("the file a spare pointed to holds %q, %v; want it untouched", b, err)
	}
	v, err := s.Get("default", "data")
	if err != nil || !slices.Equal(v.UsedBy, []string{"c1"}) {
		t.Fatalf("Get = %+v, %v", v, err)
	}
	if fi, err := os.Lstat(filepath.Join(root, volumesDir, "default", "data", metaFile)); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("volume.json: %v, %v; want a regular file", fi, err)
	}
	for _, list := range []string{filepath.Join(refsDir, "c1"), filepath.Join(podsDir, "pod1")} {
		b, err := os.ReadFile(filepath.Join(root, volumesDir, list))
		if err != nil || strings.Contains(string(b), "junk") || !strings.Contains(string(b), "default/") {
			t.Errorf("%s holds %q, %v", list, b, err)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, volumesDir, "default"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// smallStore returns a directory on a tmpfs of its own, mounted with opts,
// for a store that runs out of room or inodes; without root the test is
// skipped.
func smallStore(t *testing.T, opts string) string {
	t.Helper()
	testutil.RequireRoot(t, "needs root to mount a tmpfs")
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	return root
}

// On a full disk a new volume fails with ENOSPC, from a spare or made
// afresh, and leaves nothing behind: the failed write of its volume.json is
// an error, never a crash of the plugin.
func TestNewVolumeOnAFullDisk(t *testing.T) {
	root := smallStore(t, "size=256k,mode=0755")
	s := openStore(t, root)
	s.Start(Spares(func(err error) { t.Logf("spares: %v", err) }))
	waitSparesFull(t, s)
	if _, err := s.Create("default", "before", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(root, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	f.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling the disk: %v, want ENOSPC", err)
	}

	_, _, err = s.Acquire("c1", []Request{{Namespace: "default", Name: "data", PersistLater: true}}, nil)
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("Acquire of a new volume on a full disk = %v, want ENOSPC", err)
	}
	_, err = s.Create("default", "other", CreateOptions{})
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("Create on a full disk = %v, want ENOSPC", err)
	}
	entries, err := os.ReadDir(filepath.Join(root, volumesDir, "default"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "before" {
			t.Errorf("left behind in the namespace: %s", e.Name())
		}
	}
}

// A pool that a failure left empty fills again once the disk has room: a
// request that finds no spare wakes the refiller, as a take does.
func TestSparesComeBackAfterAFullDisk(t *testing.T) {
	root := smallStore(t, "nr_inodes=64,mode=0755")
	s := openStore(t, root)
	// Every inode taken but the one of .spare: no spare can be made.
	filler := filepath.Join(root, "filler")
	if err := os.Mkdir(filler, 0o755); err != nil {
		t.Fatal(err)
	}
	var last string
	for i := 0; ; i++ {
		name := filepath.Join(filler, strconv.Itoa(i))
		if err := os.WriteFile(name, nil, 0o644); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
		last = name
	}
	if err := os.Remove(last); err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	s.Start(Spares(func(err error) {
		select {
		case failed <- err:
		default:
		}
	}))
	select {
	case err := <-failed:
		t.Logf("spares on a full disk: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no spare failed on a disk without free inodes")
	}
	if vols, files := spareNames(s); len(vols)+len(files) != 0 {
		t.Fatalf("spares made on a full disk: %v %v", vols, files)
	}

	if err := os.RemoveAll(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("default", "data", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSparesFull(t, s)
}
