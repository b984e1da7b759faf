package podbudget

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func openDir(t *testing.T) (int, string) {
	t.Helper()
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, dir
}

// TestChargeAddsUp checks that each charge sees what the earlier ones of
// the pod wrote, failed ones included, and that other pods start at zero.
func TestChargeAddsUp(t *testing.T) {
	fd, _ := openDir(t)
	errCopy := errors.New("copy failed")
	for i, c := range []struct {
		pod           string
		wantUsed, add int64
		err           error
	}{
		{"pod1", 0, 100, nil},
		{"pod1", 100, 50, errCopy},
		{"pod2", 0, 7, nil},
		{"pod1", 150, 0, nil},
	} {
		var used int64 = -1
		err := Charge(fd, c.pod, true, func(u int64) (int64, error) { used = u; return c.add, c.err })
		if used != c.wantUsed || !errors.Is(err, c.err) {
			t.Errorf("charge %d of %s: used %d, err %v; want %d, %v", i, c.pod, used, err, c.wantUsed, c.err)
		}
	}
}

// TestChargeHeld checks that a charge that must not wait finds a record
// held elsewhere, without running fn, and that one that waits gets it once
// it is free.
func TestChargeHeld(t *testing.T) {
	fd, _ := openDir(t)
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- Charge(fd, "pod1", true, func(int64) (int64, error) {
			close(inside)
			<-release
			return 10, nil
		})
	}()
	<-inside
	ran := false
	if err := Charge(fd, "pod1", false, func(int64) (int64, error) { ran = true; return 0, nil }); !errors.Is(err, ErrHeld) || ran {
		t.Errorf("charge of a held record: %v, fn ran: %t; want ErrHeld and no run", err, ran)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var used int64
	if err := Charge(fd, "pod1", false, func(u int64) (int64, error) { used = u; return 0, nil }); err != nil || used != 10 {
		t.Errorf("charge after the release: used %d, %v; want 10", used, err)
	}
}

// TestForget checks that a forgotten pod starts again at zero and that
// ForgetAllBut keeps the records keep accepts.
func TestForget(t *testing.T) {
	fd, dir := openDir(t)
	for _, pod := range []string{"pod1", "pod2", "pod3"} {
		if err := Charge(fd, pod, true, func(int64) (int64, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := Forget(fd, "pod1"); err != nil {
		t.Fatal(err)
	}
	if err := Forget(fd, "pod1"); err != nil {
		t.Errorf("forgetting a pod without a record: %v", err)
	}
	if err := ForgetAllBut(fd, func(pod string) bool { return pod == "pod3" }); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"pod3"}) {
		t.Errorf("records left: %v; want [pod3]", names)
	}
	if _, err := os.Stat(filepath.Join(dir, "pod1")); !os.IsNotExist(err) {
		t.Errorf("pod1's record after Forget: %v", err)
	}
}
