package volumes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// holdStoreLock takes the store's flock through a descriptor of its own, as
// another process (a CLI prune) would, until the returned function is called.
func holdStoreLock(t *testing.T, root string) func() {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, volumesDir, lockFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			f.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// TestLockTimeout holds the store's lock from elsewhere: every operation of
// an NRI request gives up after the timeout with ErrBusy and a message that
// names what it was for and the lock it waited for, and changes nothing;
// once the lock is free they work again.
func TestLockTimeout(t *testing.T) {
	s, root := newStore(t)
	if _, err := s.Acquire("c1", []Request{anon("pod1", "app", "/a")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	s.SetLockTimeout(100 * time.Millisecond)
	release := holdStoreLock(t, root)
	for _, tc := range []struct {
		name string
		op   func() error
		want string
	}{
		{"Acquire", func() error {
			_, err := s.Acquire("c2", []Request{{Namespace: "shop", Name: "redis-data"}})
			return err
		}, `acquiring volume(s) shop/redis-data for container "c2"`},
		{"Release", func() error { return s.Release("c1") }, `releasing the volumes of container "c1"`},
		{"RemovePodVolumes", func() error {
			_, err := s.RemovePodVolumes("pod1")
			return err
		}, `removing the anonymous volumes of pod sandbox "pod1"`},
		{"SetReferences", func() error {
			return s.SetReferences(map[string][]string{"default/x": {"c1"}})
		}, `recording the volumes of 1 containers`},
		{"OpenContext", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			s2, err := OpenContext(ctx, root)
			if err == nil {
				s2.Close()
			}
			return err
		}, `opening the volume store`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), filepath.Join(volumesDir, lockFile)) {
				t.Fatalf("%s with the lock held elsewhere = %v; want ErrBusy naming %q and the lock file", tc.name, err, tc.want)
			}
		})
	}
	release()
	if _, err := s.Get("shop", "redis-data"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a timed-out Acquire left a volume: %v", err)
	}
	if _, err := s.Acquire("c2", []Request{{Namespace: "shop", Name: "redis-data"}}); err != nil {
		t.Fatalf("Acquire once the lock is free: %v", err)
	}
	if removed, err := s.RemovePodVolumes("pod1"); err != nil || len(removed) != 1 {
		t.Fatalf("RemovePodVolumes once the lock is free = %v, %v", removed, err)
	}
}

// TestReaperDeletesTrash checks that removals inside NRI requests leave the
// data to the reaper, and that the reaper of a new process deletes what one
// that died left in the trash, and the trash of older versions.
func TestReaperDeletesTrash(t *testing.T) {
	s, root := newStore(t)
	a := anon("pod1", "app", "/a")
	vols, err := s.Acquire("c1", []Request{a})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vols[0].Mountpoint, "sub", "f"), "data")
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.RemovePodVolumes("pod1"); err != nil || len(removed) != 1 {
		t.Fatalf("RemovePodVolumes = %v, %v", removed, err)
	}
	if _, err := os.Stat(filepath.Join(root, volumesDir, "default", AnonymousName(*a.Owner))); !os.IsNotExist(err) {
		t.Fatalf("the removed volume is still under its name: %v", err)
	}
	trash := filepath.Join(root, volumesDir, trashDir)
	if got := dirNames(t, trash); len(got) != 1 {
		t.Fatalf("trash = %v, want the removed volume", got)
	}
	s.Close()
	// A process that died left its trash, and an older version a .tmp-rm-
	// entry in the namespace.
	writeFile(t, filepath.Join(trash, "0123456789abcdef", "_data", "deep", "f"), "x")
	writeFile(t, filepath.Join(root, volumesDir, "default", ".tmp-rm-0123456789abcdef", "_data", "f"), "x")
	s = openStore(t, root)
	reaped := make(chan error, 8)
	s.StartReaper(func(err error) { reaped <- err })
	for deadline := time.Now().Add(10 * time.Second); len(dirNames(t, trash)) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("trash still holds %v", dirNames(t, trash))
		}
	}
	if got := dirNames(t, filepath.Join(root, volumesDir, "default")); slices.ContainsFunc(got, func(n string) bool { return strings.HasPrefix(n, tmpPrefix) }) {
		t.Errorf("namespace holds %v after Open", got)
	}
	select {
	case err := <-reaped:
		t.Errorf("reaper: %v", err)
	default:
	}
}
