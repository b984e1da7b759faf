package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// plainTree fills a plain volume's data with a file, a symlink, a
// directory of mode 0700 owned by 1000:1000, and an xattr.
func plainTree(t *testing.T, data string) {
	t.Helper()
	writeFile(t, filepath.Join(data, "a.txt"), "one")
	if err := os.Mkdir(filepath.Join(data, "priv"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(data, "priv", "b.txt"), "two")
	if err := os.Lchown(filepath.Join(data, "priv"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(data, "link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(filepath.Join(data, "a.txt"), "user.k", []byte("v"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
}

func checkPlainTree(t *testing.T, data string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(data, "a.txt")); err != nil || string(b) != "one" {
		t.Errorf("a.txt: %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(data, "priv"), &st); err != nil || st.Uid != 1000 || st.Mode&0o7777 != 0o700 {
		t.Errorf("priv: uid %d mode %o, %v; want 1000, 0700", st.Uid, st.Mode&0o7777, err)
	}
	if l, err := os.Readlink(filepath.Join(data, "link")); err != nil || l != "/etc/passwd" {
		t.Errorf("link: %q, %v", l, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(data, "a.txt"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr user.k: %q, %v", buf[:n], err)
	}
}

// noLeftovers fails the test if a volume's snapshots directory holds a
// temporary entry.
func noLeftovers(t *testing.T, s *Store, ns, name string) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(s.dir, ns, name, snapshotsDir))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// TestSnapshotPlainVolume: a plain volume's snapshot copies the tree with
// owners, modes, symlinks and xattrs; one in use is refused unless Live;
// a clone is independent of its source, and a restore brings the data back
// and is refused while a container uses the volume.
func TestSnapshotPlainVolume(t *testing.T) {
	s, _ := newStore(t)
	v, err := s.Create("default", "web", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	plainTree(t, v.Mountpoint)
	sn, err := s.Snapshots().Create("default", "web", "", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sn.Name) != len("20261206T205800Z") || sn.Live || sn.Size <= 0 {
		t.Errorf("snapshot %+v: want a UTC time stamp name, not live, a size", sn)
	}
	if _, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "web"}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = s.Snapshots().Create("default", "web", "busy", SnapshotOptions{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "--live") || !strings.Contains(err.Error(), "ctr") {
		t.Fatalf("snapshot of a plain volume in use: %v; want ErrInUse naming the container and --live", err)
	}
	live, err := s.Snapshots().Create("default", "web", "live", SnapshotOptions{Live: true})
	if err != nil || !live.Live {
		t.Fatalf("live snapshot: %+v, %v", live, err)
	}
	if _, err := s.Clone("default", "web", "", "web-live", CloneOptions{}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "--live") {
		t.Fatalf("clone of a plain volume in use: %v; want ErrInUse suggesting --live", err)
	}
	if res, err := s.Clone("default", "web", "", "web-live", CloneOptions{Live: true}); err != nil || !res.Live {
		t.Fatalf("live clone: %+v, %v", res, err)
	}
	writeFile(t, filepath.Join(v.Mountpoint, "a.txt"), "changed")
	if err := s.Snapshots().Restore("default", "web", sn.Name); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "ctr") {
		t.Fatalf("restore in use: %v; want ErrInUse naming the container", err)
	}
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}

	res, err := s.Clone("default", "web", sn.Name, "web2", CloneOptions{Labels: map[string]string{"from": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	checkPlainTree(t, res.Volume.Mountpoint)
	writeFile(t, filepath.Join(res.Volume.Mountpoint, "a.txt"), "clone's")
	if b, _ := os.ReadFile(filepath.Join(v.Mountpoint, "a.txt")); string(b) != "changed" {
		t.Errorf("writing the clone changed the source: %q", b)
	}
	got, err := s.Get("default", "web2")
	if err != nil || got.Labels["from"] != "web" {
		t.Errorf("clone: %+v, %v", got, err)
	}
	if need, err := needsCopyUp(s.CopyUps().Status("default", "web2")); err != nil || need {
		t.Errorf("a clone needs copy-up: %v, %v", need, err)
	}

	if err := s.Snapshots().Restore("default", "web", sn.Name); err != nil {
		t.Fatal(err)
	}
	checkPlainTree(t, v.Mountpoint)
	if _, err := os.Stat(filepath.Join(v.Mountpoint, "a.txt")); err != nil {
		t.Fatal(err)
	}
	noLeftovers(t, s, "default", "web")
	// Reopened, the snapshots are all there.
	s2 := openStore(t, s.root)
	list, err := s2.Snapshots().List("default", "")
	if err != nil || len(list) != 2 {
		t.Fatalf("ListSnapshots: %v, %v; want 2", list, err)
	}
	if probs, err := s2.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check: %v, %v", probs, err)
	}
}

// TestSnapshotBadInput: each mistake gives one error naming the item, of
// its class, and leaves nothing behind.
func TestSnapshotBadInput(t *testing.T) {
	s, _ := newStore(t)
	for _, n := range []string{"src", "taken"} {
		if _, err := s.Create("default", n, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Snapshots().Create("default", "src", "s1", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		run   func() error
		class error
		words []string
	}{
		{"duplicate snapshot", func() error { _, err := s.Snapshots().Create("default", "src", "s1", SnapshotOptions{}); return err }, ErrExists, []string{`"s1"`, `"src"`}},
		{"bad snapshot name", func() error { _, err := s.Snapshots().Create("default", "src", "../x", SnapshotOptions{}); return err }, ErrInvalid, []string{`"../x"`}},
		{"snapshot of a missing volume", func() error { _, err := s.Snapshots().Create("default", "nope", "s", SnapshotOptions{}); return err }, ErrNotFound, []string{`"nope"`}},
		{"clone of an unknown snapshot", func() error { _, err := s.Clone("default", "src", "s9", "new", CloneOptions{}); return err }, ErrNotFound, []string{`"s9"`, `"src"`}},
		{"clone onto an existing name", func() error { _, err := s.Clone("default", "src", "s1", "taken", CloneOptions{}); return err }, ErrExists, []string{`"taken"`}},
		{"clone with a size of a plain volume", func() error {
			_, err := s.Clone("default", "src", "s1", "new", CloneOptions{Size: 1 << 20})
			return err
		}, ErrInvalid, []string{`"src"`}},
		{"restore of an unknown snapshot", func() error { return s.Snapshots().Restore("default", "src", "s9") }, ErrNotFound, []string{`"s9"`}},
		{"rm of an unknown snapshot", func() error { return s.Snapshots().Remove("default", "src", "s9") }, ErrNotFound, []string{`"s9"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if !errors.Is(err, tc.class) {
				t.Fatalf("error %v, want %v", err, tc.class)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
	if _, err := s.Get("default", "new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a failed clone left volume new: %v", err)
	}
	noLeftovers(t, s, "default", "src")
	if list, err := s.Snapshots().List("default", ""); err != nil || len(list) != 1 {
		t.Errorf("snapshots: %v, %v; want only s1", list, err)
	}
}

// TestSnapshotsGoWithTheirVolume: rm of a volume removes its snapshots,
// prune keeps the snapshots of the volumes it keeps, and a snapshot can be
// removed alone.
func TestSnapshotsGoWithTheirVolume(t *testing.T) {
	s, _ := newStore(t)
	for _, n := range []string{"kept", "gone"} {
		if _, err := s.Create("default", n, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, snap := range []string{"a", "b"} {
			if _, err := s.Snapshots().Create("default", n, snap, SnapshotOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "kept"}}, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Snapshots().Count("default", "gone"); err != nil || n != 2 {
		t.Fatalf("SnapshotCount: %d, %v", n, err)
	}
	if err := s.Remove("default", "gone"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Prune(PruneOptions{Namespace: "default", All: true}); err != nil {
		t.Fatal(err)
	}
	list, err := s.Snapshots().List("default", "")
	if err != nil || len(list) != 2 || list[0].Volume != "kept" {
		t.Fatalf("after rm and prune: %v, %v; want kept's two", list, err)
	}
	if err := s.Snapshots().Remove("default", "kept", "a"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.Snapshots().List("default", "kept"); len(list) != 1 || list[0].Name != "b" {
		t.Errorf("after snapshot rm a: %v", list)
	}
	if _, err := s.Snapshots().List("default", "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("snapshots of a removed volume: %v, want ErrNotFound", err)
	}
}

// TestSnapshotImageRestoreAndGrow: a sized volume restored from a snapshot
// holds the snapshot's data at its own size, is refused while in use, and a
// clone can be made larger than its source but not smaller.
func TestSnapshotImageRestoreAndGrow(t *testing.T) {
	requireLoop(t)
	s := openSizedAt(t, t.TempDir())
	if _, err := s.Create("default", "db", CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "db"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := vols[0].Mountpoint
	writeFile(t, filepath.Join(data, "v"), "1")
	if _, err := s.Snapshots().Create("default", "db", "one", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(data, "v"), "2")
	if err := s.Snapshots().Restore("default", "db", "one"); !errors.Is(err, ErrInUse) {
		t.Fatalf("restore in use: %v", err)
	}
	if _, err := s.Clone("default", "db", "one", "small", CloneOptions{Size: 8 << 20}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("clone smaller than its source: %v", err)
	}
	big, err := s.Clone("default", "db", "", "big", CloneOptions{Size: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if big.Volume.Limit != 32<<20 {
		t.Errorf("clone's limit %d, want 32MiB", big.Volume.Limit)
	}
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grow("default", "db", 24<<20); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshots().Restore("default", "db", "one"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"db": "1", "big": "2"} {
		ctr := "reader-" + name
		vols, _, err := s.Acquire(ctr, []Request{{Namespace: "default", Name: name}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(vols[0].Mountpoint, "v")); err != nil || string(b) != want {
			t.Errorf("%s holds %q (%v), want %q", name, b, err, want)
		}
		checkShows(t, vols[0].Mountpoint, vols[0].Limit)
		if err := s.Release(ctr); err != nil {
			t.Fatal(err)
		}
	}
	noLeftovers(t, s, "default", "db")
	for _, name := range []string{"db", "big"} {
		if err := s.Remove("default", name); err != nil {
			t.Fatal(err)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(s.dir, "default")); err != nil || len(entries) != 0 {
		t.Errorf("left after rm of the volumes and their snapshots: %v, %v", entries, err)
	}
	if loops := loopsOf(s.dir); len(loops) != 0 {
		t.Errorf("loop devices left: %v", loops)
	}
}

// TestSnapshotsCountAgainstTheBudget: what snapshots hold counts against
// limits.namespaceBytes, for new volumes and for new snapshots, and
// removing a snapshot gives it back.
func TestSnapshotsCountAgainstTheBudget(t *testing.T) {
	s, _ := newStore(t)
	s.Reconfigure(WithSizePolicy(SizePolicy{NamespaceBytes: 25 << 20}))
	v, err := s.Create("default", "data", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v.Mountpoint, "big"), strings.Repeat("x", 10<<20))
	for _, snap := range []string{"s1", "s2"} {
		if _, err := s.Snapshots().Create("default", "data", snap, SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.Snapshots().Create("default", "data", "s3", SnapshotOptions{})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), `snapshot "s3"`) || !strings.Contains(err.Error(), "limits.namespaceBytes") {
		t.Fatalf("a third snapshot over the budget: %v", err)
	}
	noLeftovers(t, s, "default", "data")
	if _, err := s.Create("default", "sized", CreateOptions{Size: 8 << 20}); !errors.Is(err, ErrLimit) {
		t.Fatalf("a sized volume over the budget the snapshots use: %v", err)
	}
	if err := s.Snapshots().Remove("default", "data", "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshots().Create("default", "data", "s3", SnapshotOptions{}); err != nil {
		t.Fatalf("a snapshot within the budget again: %v", err)
	}
	// The ledger keeps what the snapshots hold across a reopen, without a
	// scan, and agrees with them.
	s2 := openStore(t, s.root)
	s2.Reconfigure(WithSizePolicy(SizePolicy{NamespaceBytes: 25 << 20}))
	if _, err := s2.Snapshots().Create("default", "data", "s4", SnapshotOptions{}); !errors.Is(err, ErrLimit) {
		t.Fatalf("a third snapshot after a reopen: %v", err)
	}
	if probs, err := s2.Check(); err != nil || len(probs) != 0 {
		t.Fatalf("Check: %v, %v", probs, err)
	}
	// Removing the volume gives back what its snapshots held.
	if err := s2.Remove("default", "data"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Create("default", "sized", CreateOptions{Size: 20 << 20}); err != nil {
		t.Fatalf("the budget after the volume and its snapshots went: %v", err)
	}
}

// TestCloneIsCounted: a clone is in the namespace counts the metrics read,
// like any volume made in the store.
func TestCloneIsCounted(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Create("default", "web", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stats().Namespaces(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Clone("default", "web", "", "web2", CloneOptions{}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Stats().Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if c["default"].Named != 2 {
		t.Errorf("Named = %d after a clone, want 2", c["default"].Named)
	}
}
