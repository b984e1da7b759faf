package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// TestFormatBudget asks for more new sized volumes than can be formatted
// within the format budget: Acquire fails with a FormattingError (ErrBusy)
// that names a volume and makes nothing, the formatting goes on without the
// request, and a retry gets every volume, mounted; an unsized volume is
// acquired meanwhile. Nothing stays in the formats directory after Close.
func TestFormatBudget(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	s.Reconfigure(WithFormatBudget(time.Millisecond))
	var reqs []Request
	for i := range 6 {
		reqs = append(reqs, Request{Namespace: "default", Name: fmt.Sprintf("big-%d", i), CreateOptions: CreateOptions{Size: 1 << 40}})
	}
	_, _, err := s.Acquire("ctr", reqs, nil)
	var fe *FormattingError
	if !errors.As(err, &fe) || !errors.Is(err, ErrBusy) {
		t.Fatalf("Acquire of 6 new 1 TiB volumes within 1ms: %v, want a FormattingError", err)
	}
	if !strings.Contains(err.Error(), `volume "big-`) || !strings.Contains(err.Error(), "being formatted") {
		t.Errorf("the error does not name the volume and the reason: %v", err)
	}
	if vols, err := s.List(ListOptions{Namespace: "default"}); err != nil || len(vols) != 0 {
		t.Errorf("a refused Acquire left %d volumes, %v", len(vols), err)
	}
	if _, _, err := s.Acquire("other", []Request{{Namespace: "default", Name: "plain"}}, nil); err != nil {
		t.Errorf("an unsized volume while images are formatted: %v", err)
	}
	var vols []*Volume
	for deadline := time.Now().Add(2 * time.Minute); ; {
		vols, _, err = s.Acquire("ctr", reqs, nil)
		if err == nil || !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("retrying: %v", err)
	}
	for _, v := range vols {
		if !s.isMountedLocked(v.Namespace, v.Name) {
			t.Errorf("volume %s is not mounted", v.Name)
		}
	}
	s.Close()
	if names, _ := os.ReadDir(filepath.Join(root, "volumes", formatsDir)); len(names) != 0 {
		t.Errorf("entries left in %s after Close: %v", formatsDir, names)
	}
}

// TestOpenRemovesDeadFormats: Open moves into the trash the entries of the
// formats directory that no live process holds, and leaves a held one.
func TestOpenRemovesDeadFormats(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "volumes", formatsDir)
	for _, n := range []string{"f-1-dead", "f-1-live"} {
		if err := os.MkdirAll(filepath.Join(dir, n, dataDir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	live, err := os.Open(filepath.Join(dir, "f-1-live"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := unix.Flock(int(live.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	names, _ := os.ReadDir(dir)
	if len(names) != 1 || names[0].Name() != "f-1-live" {
		t.Errorf("after Open the formats directory holds %v, want only the live entry", names)
	}
}

// formatMounts returns the mounts in the formats directory of s.
func formatMounts(s *Store) []string {
	m, _ := fsx.MountsUnder(filepath.Join(s.dir, formatsDir))
	return m
}

// TestUntakenFormatsExpire: requests that fail after their images were
// formatted (here beside an external volume that does not exist) leave
// ready entries nobody takes; once they have waited the idle time they are
// unmounted and removed, and count against no bound.
func TestUntakenFormatsExpire(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	s.formats.mu.Lock()
	s.formats.idle = time.Second
	s.formats.mu.Unlock()
	for i := range 3 {
		_, _, err := s.Acquire("ctr", []Request{
			{Namespace: "default", Name: "missing", MustExist: true},
			{Namespace: "default", Name: fmt.Sprintf("new-%d", i), CreateOptions: CreateOptions{Size: int64(64+i) << 20}},
		}, nil)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Acquire beside a missing external volume: %v, want ErrNotFound", err)
		}
	}
	if m := formatMounts(s); len(m) == 0 {
		t.Fatalf("no image left ready by the failed requests: the test shows nothing")
	}
	// Waited for, not timed: the entries go after their idle time.
	left := func() int {
		names, _ := os.ReadDir(filepath.Join(s.dir, formatsDir))
		return len(names) + len(formatMounts(s))
	}
	deadline := time.Now().Add(30 * time.Second)
	for left() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if m := formatMounts(s); len(m) != 0 {
		t.Errorf("images nobody took are still mounted: %v", m)
	}
	s.formats.mu.Lock()
	n := s.formats.total()
	s.formats.mu.Unlock()
	if n != 0 {
		t.Errorf("%d images still count as ready or being formatted", n)
	}
	if names, _ := os.ReadDir(filepath.Join(s.dir, formatsDir)); len(names) != 0 {
		t.Errorf("entries left in %s: %v", formatsDir, names)
	}
}

// TestFormatsPerNamespace: one namespace cannot fill the node's pool of
// images being formatted or waiting to be taken: a request past its share is
// refused with an error that names the namespace and the bound, and another
// namespace still gets its sized volume.
func TestFormatsPerNamespace(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	var reqs []Request
	for i := range maxFormats {
		reqs = append(reqs, Request{Namespace: "greedy", Name: fmt.Sprintf("v%d", i), CreateOptions: CreateOptions{Size: 16 << 20}})
	}
	s.Reconfigure(WithFormatBudget(time.Millisecond))
	_, _, err := s.Acquire("ctr", reqs, nil)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), `namespace "greedy"`) || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("Acquire of %d new sized volumes in one namespace: %v, want a refusal naming the namespace and its bound", maxFormats, err)
	}
	s.formats.mu.Lock()
	n := s.formats.total()
	s.formats.mu.Unlock()
	if n != 0 {
		t.Errorf("the refused request left %d images being formatted", n)
	}
	s.Reconfigure(WithFormatBudget(time.Minute))
	if _, _, err := s.Acquire("other", []Request{{Namespace: "polite", Name: "v", CreateOptions: CreateOptions{Size: 16 << 20}}}, nil); err != nil {
		t.Errorf("another namespace's sized volume: %v", err)
	}
}
