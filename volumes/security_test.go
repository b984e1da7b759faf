package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// TestUntrustedNames feeds names and namespaces that try to leave the store
// to every entry point of the store API: each must fail with ErrInvalid before
// touching the disk. Next to the store sits a sentinel directory where the
// traversals would land.
func TestUntrustedNames(t *testing.T) {
	badNames := map[string]string{
		"traversal":       "../../etc",
		"slash":           "a/b",
		"dot":             ".",
		"dotdot":          "..",
		"empty":           "",
		"300 chars":       strings.Repeat("a", 300),
		"129 chars":       strings.Repeat("b", 129),
		"NUL":             "a\x00b",
		"newline":         "a\nb",
		"leading dot":     ".hidden",
		"temporary entry": tmpPrefix + "x",
		"absolute":        "/etc",
		"space":           "a b",
		"unicode slash":   "a\u2215b",
	}
	badNamespaces := map[string]string{
		"ns traversal": "../x",
		"ns dotdot":    "..",
		"ns empty":     "",
		"ns slash":     "a/b",
		"ns 64 chars":  strings.Repeat("n", 64),
		"ns NUL":       "a\x00",
		"ns newline":   "a\n",
	}
	ops := map[string]func(s *Store, ns, name string) error{
		"Create": func(s *Store, ns, name string) error {
			_, err := s.Create(ns, name, CreateOptions{})
			return err
		},
		"Get": func(s *Store, ns, name string) error {
			_, err := s.Get(ns, name)
			return err
		},
		"Remove": func(s *Store, ns, name string) error { return s.Remove(ns, name) },
		"Size": func(s *Store, ns, name string) error {
			_, err := s.Size(&Volume{Namespace: ns, Name: name})
			return err
		},
		"CopyUp": func(s *Store, ns, name string) error {
			return s.CopyUps().Copy(ns, name, func(string) error {
				t.Error("CopyUp called copyFn for an invalid name")
				return nil
			})
		},
		"Acquire": func(s *Store, ns, name string) error {
			_, _, err := s.Acquire("c1", []Request{{Namespace: ns, Name: name}}, nil)
			return err
		},
	}
	type tc struct{ ns, name string }
	cases := map[string]tc{}
	for k, n := range badNames {
		cases[k] = tc{"default", n}
	}
	for k, ns := range badNamespaces {
		cases[k] = tc{ns, "v"}
	}
	for caseName, c := range cases {
		for opName, op := range ops {
			t.Run(caseName+"/"+opName, func(t *testing.T) {
				parent := t.TempDir()
				root := filepath.Join(parent, "store")
				s := openStore(t, root)
				// Where "../../etc" from a namespace directory, "../x" from the
				// volumes directory and "/etc" would land.
				for _, d := range []string{filepath.Join(root, "etc"), filepath.Join(root, "x"), filepath.Join(parent, "sentinel")} {
					writeFile(t, filepath.Join(d, "precious"), "keep me")
				}
				if _, err := s.Create("default", "existing", CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				before := fstree.Snapshot(t, parent, lockFile)
				err := op(s, c.ns, c.name)
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%s(%q, %q) = %v, want ErrInvalid", opName, c.ns, c.name, err)
				}
				if !strings.Contains(err.Error(), "invalid") {
					t.Errorf("error %q does not say what is invalid", err)
				}
				fstree.Same(t, "host", before, fstree.Snapshot(t, parent, lockFile))
			})
		}
	}
	// Acquire validates every request before creating any volume.
	t.Run("Acquire all-or-nothing", func(t *testing.T) {
		parent := t.TempDir()
		s := openStore(t, filepath.Join(parent, "store"))
		before := fstree.Snapshot(t, parent, lockFile)
		_, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "good"}, {Namespace: "default", Name: "../../etc"}}, nil)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("Acquire = %v, want ErrInvalid", err)
		}
		fstree.Same(t, "host", before, fstree.Snapshot(t, parent, lockFile))
	})
}

// secPlant replaces part of an anonymous volume by a symlink to a directory
// outside the store. The outside directory is made a perfect decoy: the real
// directory is moved there, so a store that followed the link would find a
// valid volume, with data, to measure, fill or delete.
type secPlant struct {
	name string
	// plant returns the outside directory it made.
	plant func(t *testing.T, nsDir, volName, outsideParent string) string
	// broken: the volume can no longer be read, so Size and CopyUp fail.
	broken bool
	// hardlinked: the volume shares an inode with the outside, which du
	// rightly counts, so Size is not bounded.
	hardlinked bool
}

func secMoveOut(t *testing.T, inside, outside string) {
	t.Helper()
	if err := os.Rename(inside, outside); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, inside); err != nil {
		t.Fatal(err)
	}
}

var secPlants = []secPlant{
	{name: "_data is a symlink", broken: true, plant: func(t *testing.T, nsDir, vol, out string) string {
		dir := filepath.Join(out, "data")
		secMoveOut(t, filepath.Join(nsDir, vol, dataDir), dir)
		return dir
	}},
	{name: "volume dir is a symlink", broken: true, plant: func(t *testing.T, nsDir, vol, out string) string {
		dir := filepath.Join(out, "vol")
		secMoveOut(t, filepath.Join(nsDir, vol), dir)
		return dir
	}},
	{name: "namespace dir is a symlink", broken: true, plant: func(t *testing.T, nsDir, vol, out string) string {
		dir := filepath.Join(out, "ns")
		secMoveOut(t, nsDir, dir)
		return dir
	}},
	{name: "dir inside _data is a symlink", plant: func(t *testing.T, nsDir, vol, out string) string {
		dir := filepath.Join(out, "sub")
		secMoveOut(t, filepath.Join(nsDir, vol, dataDir, "sub"), dir)
		return dir
	}},
	{name: "hardlink inside _data to an outside file", hardlinked: true, plant: func(t *testing.T, nsDir, vol, out string) string {
		dir := filepath.Join(out, "files")
		writeFile(t, filepath.Join(dir, "hard"), strings.Repeat("h", 1<<20))
		if err := os.Link(filepath.Join(dir, "hard"), filepath.Join(nsDir, vol, dataDir, "hard")); err != nil {
			t.Fatal(err)
		}
		return dir
	}},
}

// TestPlantedSymlinksNeverFollowed replaces parts of a volume by symlinks to
// outside directories and runs every operation that reads, fills or deletes
// volumes: none may change anything outside the store.
func TestPlantedSymlinksNeverFollowed(t *testing.T) {
	owner := Owner{PodSandboxID: "pod1", Container: "app", Target: "/data"}
	name := AnonymousName(owner)
	ops := []struct {
		name string
		run  func(t *testing.T, s *Store, p secPlant)
	}{
		{"Size", func(t *testing.T, s *Store, p secPlant) {
			size, err := s.Size(&Volume{Namespace: "default", Name: name})
			if p.broken && err == nil {
				t.Errorf("Size of a volume with a planted symlink = %d, want an error", size)
			}
			// What stays in the volume is "top", a few KiB on disk.
			if !p.hardlinked && size >= 1<<20 {
				t.Errorf("Size = %d counts data outside the volume", size)
			}
		}},
		{"CopyUp", func(t *testing.T, s *Store, p secPlant) {
			err := s.CopyUps().Copy("default", name, func(dir string) error {
				t.Errorf("CopyUp called copyFn(%q) for a volume that has data or is broken", dir)
				return nil
			})
			if p.broken && err == nil {
				t.Error("CopyUp into a broken volume succeeded")
			}
		}},
		{"Remove", func(t *testing.T, s *Store, _ secPlant) {
			if err := s.Remove("default", name); err != nil {
				t.Logf("Remove: %v", err)
			}
		}},
		{"Prune", func(t *testing.T, s *Store, _ secPlant) {
			if _, _, err := s.Prune(PruneOptions{Namespace: "default", All: true}); err != nil {
				t.Logf("Prune: %v", err)
			}
		}},
		{"RemovePodVolumes", func(t *testing.T, s *Store, _ secPlant) {
			if _, err := s.RemovePodVolumes(owner.PodSandboxID); err != nil {
				t.Logf("RemovePodVolumes: %v", err)
			}
		}},
		{"Reconcile", func(t *testing.T, s *Store, _ secPlant) {
			if err := reconcile(s, nil, nil, false); err != nil {
				t.Logf("Reconcile: %v", err)
			}
		}},
		{"Check", func(t *testing.T, s *Store, p secPlant) {
			probs, err := s.Check()
			if err != nil {
				t.Fatal(err)
			}
			if p.broken && len(probs) == 0 {
				t.Error("Check found no problem with a planted symlink")
			}
		}},
	}
	for _, p := range secPlants {
		for _, op := range ops {
			t.Run(p.name+"/"+op.name, func(t *testing.T) {
				s, root := newStore(t)
				vols, _, err := s.Acquire("c1", []Request{{Namespace: "default", Owner: &owner}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(vols[0].Mountpoint, "sub", "precious"), strings.Repeat("p", 1<<20))
				writeFile(t, filepath.Join(vols[0].Mountpoint, "top"), "top")
				if err := s.Release("c1"); err != nil {
					t.Fatal(err)
				}
				outside := p.plant(t, filepath.Join(root, volumesDir, "default"), name, t.TempDir())
				before := fstree.Snapshot(t, outside, lockFile)
				op.run(t, s, p)
				fstree.Same(t, "outside the store", before, fstree.Snapshot(t, outside, lockFile))
			})
		}
	}
}

// TestSymlinkSwapRace swaps a directory inside a volume for a symlink to an
// outside directory, and back, in a tight loop while Size and Remove run:
// whichever moment the swap hits, nothing outside may be counted or deleted.
func TestSymlinkSwapRace(t *testing.T) {
	duration := 2 * time.Second
	if testing.Short() {
		duration = 300 * time.Millisecond
	}
	s, root := newStore(t)
	nsDir := filepath.Join(root, volumesDir, "default")
	outside := t.TempDir()
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(outside, "d", "f"+string(rune('a'+i))), strings.Repeat("o", 64<<10))
	}
	writeFile(t, filepath.Join(outside, "big"), strings.Repeat("B", 4<<20))
	before := fstree.Snapshot(t, outside, lockFile)

	// fill builds the directory the swapper targets under another name, so
	// the test itself never writes through a planted symlink.
	fill := func(mp string) {
		for _, d := range []string{"build", "build/deeper"} {
			for i := 0; i < 5; i++ {
				writeFile(t, filepath.Join(mp, d, "f"+string(rune('a'+i))), "x")
			}
		}
		if err := os.Rename(filepath.Join(mp, "build"), filepath.Join(mp, "sub")); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var swaps atomic.Int64
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
			// The volume under its name, and any volume Remove has set aside
			// under a temporary name and is deleting.
			subs, _ := filepath.Glob(filepath.Join(nsDir, "*", dataDir, "sub"))
			more, _ := filepath.Glob(filepath.Join(nsDir, tmpPrefix+"*", dataDir, "sub"))
			for _, sub := range append(subs, more...) {
				real := sub + ".real"
				if os.Rename(sub, real) != nil {
					continue
				}
				if os.Symlink(outside, sub) == nil {
					swaps.Add(1)
					os.Remove(sub)
				}
				os.Rename(real, sub)
			}
		}
	}()
	deadline := time.Now().Add(duration)
	rounds, failedDeletes := 0, 0
	for time.Now().Before(deadline) {
		v, err := s.Create("default", "racy", CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fill(v.Mountpoint)
		for i := 0; i < 20; i++ {
			size, err := s.Size(v)
			if err == nil && size >= 1<<20 {
				t.Errorf("Size = %d: it counted data outside the volume", size)
			}
		}
		if err := s.Remove("default", "racy"); err != nil {
			// A swap can make deleting the data fail; the volume is gone
			// under its name all the same, and the next round goes on.
			if !strings.Contains(err.Error(), "deleting its data failed") {
				t.Errorf("Remove: %v", err)
			}
			failedDeletes++
		}
		// Leftovers of a failed deletion go away as Open would remove them.
		names, _ := os.ReadDir(nsDir)
		for _, e := range names {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				nsFd, err := fsx.OpenDir(s.dirFd, "default")
				if err == nil {
					removeAllAt(nsFd, e.Name(), s.dev)
					unix.Close(nsFd)
				}
			}
		}
		rounds++
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rounds of create/size/remove, %d symlink swaps, %d deletions cut short by a swap", rounds, swaps.Load(), failedDeletes)
	if swaps.Load() == 0 {
		t.Error("the swapper never planted a symlink; the test tested nothing")
	}
	fstree.Same(t, "outside the store", before, fstree.Snapshot(t, outside, lockFile))
}

// TestMountInsideVolumeRefused bind-mounts an outside directory inside a
// volume: a bind mount from the same filesystem keeps st_dev, so only the
// mount table tells. Every removal must refuse and leave the mount's content.
func TestMountInsideVolumeRefused(t *testing.T) {
	owner := Owner{PodSandboxID: "pod1", Container: "app", Target: "/data"}
	for _, op := range []struct {
		name string
		run  func(s *Store, name string) error
	}{
		{"Remove", func(s *Store, name string) error { return s.Remove("default", name) }},
		{"Prune", func(s *Store, name string) error {
			removed, _, err := s.Prune(PruneOptions{Namespace: "default", All: true})
			if len(removed) > 0 {
				return errors.New("Prune removed " + removed[0].Name)
			}
			return err
		}},
		{"RemovePodVolumes", func(s *Store, name string) error {
			removed, err := s.RemovePodVolumes(owner.PodSandboxID)
			if len(removed) > 0 {
				return errors.New("RemovePodVolumes removed " + removed[0])
			}
			return err
		}},
	} {
		t.Run(op.name, func(t *testing.T) {
			s, _ := newStore(t)
			vols, _, err := s.Acquire("c1", []Request{{Namespace: "default", Owner: &owner}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Release("c1"); err != nil {
				t.Fatal(err)
			}
			outside := t.TempDir()
			writeFile(t, filepath.Join(outside, "precious"), "keep me")
			mnt := filepath.Join(vols[0].Mountpoint, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount(outside, mnt, "", unix.MS_BIND, ""); err != nil {
				t.Skipf("cannot bind-mount: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
			before := fstree.Snapshot(t, outside, lockFile)
			err = op.run(s, vols[0].Name)
			if op.name == "Remove" && !errors.Is(err, ErrInUse) {
				t.Errorf("Remove with a mount inside = %v, want ErrInUse", err)
			}
			if op.name != "Remove" && err != nil && !errors.Is(err, ErrInUse) {
				t.Errorf("%s = %v", op.name, err)
			}
			if _, err := s.Get("default", vols[0].Name); err != nil {
				t.Errorf("volume with a mount inside is gone: %v", err)
			}
			fstree.Same(t, "the mounted directory", before, fstree.Snapshot(t, outside, lockFile))
		})
	}
}
