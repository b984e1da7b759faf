package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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
	if _, _, err := s.Acquire("c1", []Request{anon("pod1", "app", "/a")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	s.Reconfigure(WithLockTimeout(100 * time.Millisecond))
	release := holdStoreLock(t, root)
	for _, tc := range []struct {
		name string
		op   func() error
		want string
	}{
		{"Acquire", func() error {
			_, _, err := s.Acquire("c2", []Request{{Namespace: "shop", Name: "redis-data"}}, nil)
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
		{"Open WithContext", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			s2, err := Open(root, WithContext(ctx))
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
	if _, _, err := s.Acquire("c2", []Request{{Namespace: "shop", Name: "redis-data"}}, nil); err != nil {
		t.Fatalf("Acquire once the lock is free: %v", err)
	}
	if removed, err := s.RemovePodVolumes("pod1"); err != nil || len(removed) != 1 {
		t.Fatalf("RemovePodVolumes once the lock is free = %v, %v", removed, err)
	}
}

// TestRequestsAnswerWhileHealthCheckWaits: while another process (a CLI)
// holds the store's lock, a health check (Ping, as /healthz runs it) waits
// for it; the operations the plugin runs inside NRI requests must still give
// up or finish within the lock timeout, Close must not wait for the lock,
// and a Ping with a deadline gives up with ErrBusy. Once the lock is free,
// the waiting Ping succeeds.
func TestRequestsAnswerWhileHealthCheckWaits(t *testing.T) {
	s, root := newStore(t)
	if _, err := s.Create("default", "v", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Reconfigure(WithLockTimeout(100 * time.Millisecond))
	release := holdStoreLock(t, root)
	pinged := make(chan error, 1)
	go func() { pinged <- s.Stats().Ping(context.Background()) }()
	waitForGoroutineIn(t, "volumes.Stats.Ping")
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"ForgetPodCopyUp (RemovePodSandbox)", func() error { return s.PodBudgets().Forget("pod1") }},
		{"ForgetPodCopyUps (Synchronize)", func() error { return s.PodBudgets().ForgetAllBut(func(string) bool { return true }) }},
		{"CopyUpStatus (CreateContainer)", func() error { _, err := s.CopyUps().Status("default", "v"); return err }},
		{"Release (RemoveContainer)", func() error { return s.Release("c1") }},
		{"Ping with a deadline", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := s.Stats().Ping(ctx); !errors.Is(err, ErrBusy) {
				return fmt.Errorf("Ping = %v, want ErrBusy", err)
			}
			return nil
		}},
	} {
		done := make(chan error, 1)
		go func() { done <- tc.op() }()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, ErrBusy) {
				t.Errorf("%s: %v", tc.name, err)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("%s still waiting after 3s with a lock timeout of 100ms", tc.name)
		}
	}
	release()
	select {
	case err := <-pinged:
		if err != nil {
			t.Errorf("Ping once the lock was free: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Ping still waiting 10s after the lock was freed")
	}
}

// TestCloseWhileHealthCheckWaits: Close returns while a Ping waits for a
// lock another process holds, and the Ping then fails instead of waiting on.
func TestCloseWhileHealthCheckWaits(t *testing.T) {
	s, root := newStore(t)
	holdStoreLock(t, root)
	pinged := make(chan error, 1)
	go func() { pinged <- s.Stats().Ping(context.Background()) }()
	waitForGoroutineIn(t, "volumes.Stats.Ping")
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for _, c := range []struct {
		what string
		ch   chan error
		fail bool
	}{{"Close", closed, false}, {"the waiting Ping after Close", pinged, true}} {
		select {
		case err := <-c.ch:
			if (err != nil) != c.fail {
				t.Errorf("%s = %v", c.what, err)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("%s still waiting after 3s", c.what)
		}
	}
}

// waitForGoroutineIn waits until some goroutine runs fn, so that a test
// knows an operation it started in the background has begun.
func waitForGoroutineIn(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine entered %s", fn)
		}
	}
}

// TestReaperDeletesTrash checks that removals inside NRI requests leave the
// data to the reaper, and that the reaper of a new process deletes what one
// that died left in the trash, and the trash of older versions.
func TestReaperDeletesTrash(t *testing.T) {
	s, root := newStore(t)
	a := anon("pod1", "app", "/a")
	vols, _, err := s.Acquire("c1", []Request{a}, nil)
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
	s.Start(Reaper(func(err error) { reaped <- err }))
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
