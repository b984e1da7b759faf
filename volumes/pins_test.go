package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// newPinStore is newStore for tests that pin: it skips without the right to
// mount, and removes every pin before the test's directories go, since
// removing a tree would reach through a pin into what it shows.
func newPinStore(t *testing.T) (*Store, string) {
	t.Helper()
	testutil.RequireRoot(t, "pinning mounts, which needs root")
	s, root := newStore(t)
	t.Cleanup(func() {
		if _, err := s.Pins().RemoveStale(nil); err != nil {
			t.Errorf("removing pins: %v", err)
		}
	})
	return s, root
}

func openPath(t *testing.T, dir, rel string) *os.File {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := OpenPathBeneath(d, rel)
	if err != nil {
		t.Fatalf("OpenPathBeneath(%s, %s): %v", dir, rel, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(sa, sb)
}

func isMountPoint(t *testing.T, p string) bool {
	t.Helper()
	all, err := fsx.MountPoints()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(fsx.MountsBelow(all, p), p)
}

// TestPinHostPath checks that a pin shows exactly the object that was
// opened, submounts included, whatever is swapped in under its path later,
// and that removing pins never touches what they show.
func TestPinHostPath(t *testing.T) {
	s, root := newPinStore(t)
	// The host directory is a shared mount, as / is on most hosts: a pin
	// must still be private, out of its source's peer group.
	host := t.TempDir()
	if err := unix.Mount(host, host, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(host, unix.MNT_DETACH) })
	if err := unix.Mount("", host, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(host, "d", "inside"), "inside")
	writeFile(t, filepath.Join(host, "file"), "a file")
	sub := filepath.Join(host, "d", "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(host, "moved", "sub"), unix.MNT_DETACH) })
	writeFile(t, filepath.Join(sub, "on-tmpfs"), "submount")

	dirPin, err := s.Pins().HostPath("ctr1", 0, openPath(t, host, "d"))
	if err != nil {
		t.Fatal(err)
	}
	filePin, err := s.Pins().HostPath("ctr1", 1, openPath(t, host, "file"))
	if err != nil {
		t.Fatal(err)
	}
	resolvedRoot, _ := filepath.EvalSymlinks(root)
	if want := filepath.Join(resolvedRoot, "pins", "ctr1", "0"); dirPin != want {
		t.Errorf("pin path = %s, want %s", dirPin, want)
	}
	// The checked directory is swapped for a symlink to / after the pin.
	if err := os.Rename(filepath.Join(host, "d"), filepath.Join(host, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(host, "d")); err != nil {
		t.Fatal(err)
	}
	if !sameFile(t, dirPin, filepath.Join(host, "moved")) || !sameFile(t, filePin, filepath.Join(host, "file")) {
		t.Fatalf("the pins do not show the objects that were opened")
	}
	if got, err := os.ReadFile(filepath.Join(dirPin, "sub", "on-tmpfs")); err != nil || string(got) != "submount" {
		t.Errorf("the submount is not in the pin: %q, %v", got, err)
	}
	if v, ok := mountPropagation(t, host); !ok || !strings.HasPrefix(v, "shared:") {
		t.Fatalf("the host directory is %q (found %v), want shared", v, ok)
	}
	if v, ok := mountPropagation(t, dirPin); !ok || v != "" {
		t.Errorf("the pin is %q (found %v), want private", v, ok)
	}

	// A second container's pins, and a pin made again replaces the first.
	if _, err := s.Pins().HostPath("ctr2", 0, openPath(t, host, "moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pins().HostPath("ctr2", 0, openPath(t, host, "file")); err != nil {
		t.Fatal(err)
	}
	if !sameFile(t, filepath.Join(resolvedRoot, "pins", "ctr2", "0"), filepath.Join(host, "file")) {
		t.Errorf("pin made again does not show the new object")
	}

	before := fstree.Snapshot(t, host)
	removed, err := s.Pins().RemoveStale(map[string]bool{"ctr1": true})
	if err != nil || !slices.Equal(removed, []string{"ctr2"}) {
		t.Fatalf("RemoveStalePins = %v, %v; want ctr2 removed", removed, err)
	}
	if isMountPoint(t, dirPin) == false {
		t.Errorf("the pin of a live container went")
	}
	if err := s.Pins().Remove("ctr1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Pins().Remove("ctr1"); err != nil {
		t.Errorf("Unpin again: %v", err)
	}
	if entries, err := os.ReadDir(filepath.Join(root, "pins")); err != nil || len(entries) != 0 {
		t.Errorf("pins left: %v, %v", entries, err)
	}
	fstree.Same(t, "the pinned host directory", before, fstree.Snapshot(t, host))
}

// mountPropagation returns the propagation fields of mount point p in
// mountinfo ("" for a private mount).
func mountPropagation(t *testing.T, p string) (string, bool) {
	t.Helper()
	mounts, err := fsx.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Point == p {
			return strings.Join(m.Optional, " "), true
		}
	}
	return "", false
}

// TestPinsAfterReboot checks that Open removes pins whose mount is gone, as
// after a reboot, and that Check reports what Open cannot remove, without
// changing anything.
func TestPinsAfterReboot(t *testing.T) {
	s, root := newPinStore(t)
	host := t.TempDir()
	writeFile(t, filepath.Join(host, "d", "inside"), "inside")
	pin, err := s.Pins().HostPath("ctr1", 0, openPath(t, host, "d"))
	if err != nil {
		t.Fatal(err)
	}
	kept, err := s.Pins().HostPath("ctr2", 0, openPath(t, host, "d"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(root, "pins")
	// Things no pin is: a directory with content where nothing is mounted,
	// an entry that is no pin's name, a container entry that is a file.
	writeFile(t, filepath.Join(pins, "ctr3", "0", "written-while-unmounted"), "x")
	writeFile(t, filepath.Join(pins, "ctr2", "junk"), "x")
	writeFile(t, filepath.Join(pins, "not-a-dir"), "")
	writeFile(t, filepath.Join(pins, ".bad id"), "")

	s2 := openStore(t, root)
	if _, err := os.Lstat(filepath.Join(pins, "ctr1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the unmounted pin of ctr1 is still there: %v", err)
	}
	if !isMountPoint(t, kept) {
		t.Errorf("Open removed a mounted pin")
	}
	before := fstree.Snapshot(t, pins, "0")
	probs, err := s2.Check()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range probs {
		if p.Namespace != "" {
			t.Errorf("pin problem %+v has a namespace", p)
		}
		got[p.Name] = p.Reason
	}
	for name, want := range map[string]string{
		"pins/ctr3/0":    "stray pin",
		"pins/ctr2/junk": "not a pin",
		"pins/not-a-dir": "not a directory",
		"pins/.bad id":   "invalid container ID",
	} {
		if !strings.Contains(got[name], want) {
			t.Errorf("Check: %s = %q, want %q (all: %v)", name, got[name], want, got)
		}
	}
	if len(got) != 4 {
		t.Errorf("Check reported %v, want 4 problems", got)
	}
	fstree.Same(t, "pins after Check", before, fstree.Snapshot(t, pins, "0"))
	if got, err := os.ReadFile(filepath.Join(pins, "ctr3", "0", "written-while-unmounted")); err != nil || string(got) != "x" {
		t.Errorf("a stray pin's content was touched: %q, %v", got, err)
	}
	// What a person would delete after reading Check's report.
	for _, p := range []string{"ctr3/0/written-while-unmounted", "ctr2/junk", "not-a-dir", ".bad id"} {
		if err := os.Remove(filepath.Join(pins, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenPathBeneath checks that no symlink is followed, the last
// component's included, and that nothing outside the directory is reached.
func TestOpenPathBeneath(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "d", "f"), "x")
	for link, target := range map[string]string{"abs": "/", "rel": "d", "up": ".."} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, rel := range []string{"d", "d/f", "."} {
		f, err := OpenPathBeneath(d, rel)
		if err != nil {
			t.Errorf("OpenPathBeneath(%s) = %v", rel, err)
			continue
		}
		f.Close()
	}
	for _, rel := range []string{"abs", "rel", "rel/f", "up", "up/" + filepath.Base(dir), "..", "d/../..", "/etc", "missing"} {
		if f, err := OpenPathBeneath(d, rel); err == nil {
			f.Close()
			t.Errorf("OpenPathBeneath(%s) succeeded", rel)
		}
	}
}

func TestValidateSubpath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"logs", "logs"},
		{"logs/app/", "logs/app"},
		{"./logs//app", "logs/app"},
		{"a/./b", "a/b"},
		{"", ""},
		{".", ""},
		{"./", ""},
		{"/logs", ""},
		{"..", ""},
		{"logs/../..", ""},
		{"logs/../app", ""},
		{"a\x00b", ""},
		{"a\nb", ""},
		{strings.Repeat("a/", 2049), ""},
	} {
		got, err := ValidateSubpath(tc.in)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateSubpath(%q) = %q, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ValidateSubpath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestAcquire checks that a subpath is pinned with its volume, that
// a missing one, a file and one through a symlink are refused with nothing
// left behind, and that the store maps the pin back to its volume.
func TestAcquire(t *testing.T) {
	s, root := newPinStore(t)
	v, err := s.Create("default", "data", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v.Mountpoint, "logs", "app", "f"), "log")
	writeFile(t, filepath.Join(v.Mountpoint, "file"), "x")
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(v.Mountpoint, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("logs", filepath.Join(v.Mountpoint, "inner")); err != nil {
		t.Fatal(err)
	}
	reqs := []Request{{Namespace: "default", Name: "data"}, {Namespace: "default", Name: "fresh"}}
	vols, pins, err := s.Acquire("ctr1", reqs, []Subpath{{Namespace: "default", Name: "data", Path: "logs/app", Pin: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || len(pins) != 1 || !sameFile(t, pins[0], filepath.Join(v.Mountpoint, "logs", "app")) {
		t.Fatalf("Acquire = %v, %v; want two volumes and a pin of logs/app", names(vols), pins)
	}
	if ns, name, ok := s.pins.volume(pins[0]); !ok || ns != "default" || name != "data" {
		t.Errorf("PinnedVolume(%s) = %s, %s, %v", pins[0], ns, name, ok)
	}
	if _, _, ok := s.pins.volume(filepath.Join(filepath.Dir(pins[0]), "3")); ok {
		t.Errorf("PinnedVolume of a host path pin found a volume")
	}

	for _, tc := range []struct {
		path    string
		volume  string
		wantErr error
	}{
		{"missing", "data", ErrNotFound},
		{"file", "data", ErrInvalid},
		{"link", "data", ErrInvalid},
		{"link/x", "data", ErrInvalid},
		{"inner/app", "data", ErrInvalid},
		{"../..", "data", ErrInvalid},
		{"logs", "new-volume", ErrNotFound},
	} {
		t.Run(tc.path+" of "+tc.volume, func(t *testing.T) {
			reqs := []Request{{Namespace: "default", Name: tc.volume}, {Namespace: "default", Owner: &Owner{PodSandboxID: "pod", Container: "c", Target: "/t"}}}
			_, _, err := s.Acquire("ctr2", reqs, []Subpath{{Namespace: "default", Name: tc.volume, Path: tc.path, Pin: 0}})
			var se *SubpathError
			if !errors.As(err, &se) || !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("Acquire = %v, want a SubpathError naming %q and wrapping %v", err, tc.path, tc.wantErr)
			}
			vols, err := s.List(ListOptions{Namespace: "default"})
			if err != nil {
				t.Fatal(err)
			}
			if got := names(vols); !slices.Equal(got, []string{"default/data", "default/fresh"}) {
				t.Errorf("volumes after a refused subpath: %v", got)
			}
			if _, err := os.Lstat(filepath.Join(root, "pins", "ctr2")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pins of the refused container: %v", err)
			}
		})
	}
	if got, err := s.Get("default", "data"); err != nil || !slices.Equal(got.UsedBy, []string{"ctr1"}) {
		t.Errorf("data after refused subpaths: %+v, %v; want used by ctr1 only", got, err)
	}
}

// TestSubpathSwapRace swaps a subpath's directory for a symlink to / over
// and over while it is pinned: every pin shows the directory, never /.
func TestSubpathSwapRace(t *testing.T) {
	s, _ := newPinStore(t)
	v, err := s.Create("default", "data", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v.Mountpoint, "logs", "inside"), "inside")
	if err := os.Symlink("/", filepath.Join(v.Mountpoint, "swap")); err != nil {
		t.Fatal(err)
	}
	dataFd, err := unix.Open(v.Mountpoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dataFd)
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
			if err := unix.Renameat2(dataFd, "logs", dataFd, "swap", unix.RENAME_EXCHANGE); err != nil {
				t.Errorf("swap: %v", err)
				return
			}
		}
	}()
	pinned := 0
	for i := 0; i < 200; i++ {
		id := "ctr" + strings.Repeat("x", i%3) + string(rune('a'+i%26))
		_, pins, err := s.Acquire(id, []Request{{Namespace: "default", Name: "data"}}, []Subpath{{Namespace: "default", Name: "data", Path: "logs", Pin: 0}})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Acquire = %v, want a refusal of the symlink", err)
			}
			continue
		}
		pinned++
		if got, err := os.ReadFile(filepath.Join(pins[0], "inside")); err != nil || string(got) != "inside" {
			t.Errorf("pin %d shows %v, not the subpath's directory (%v)", i, got, err)
		}
		if err := s.Pins().Remove(id); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(id); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if pinned == 0 {
		t.Fatal("no subpath was pinned while the racer ran")
	}
}
