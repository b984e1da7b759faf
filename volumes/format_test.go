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
)

// TestFormatBudget asks for more new sized volumes than can be formatted
// within the format budget: Acquire fails with a FormattingError (ErrBusy)
// that names a volume and makes nothing, the formatting goes on without the
// request, and a retry gets every volume, mounted; an unsized volume is
// acquired meanwhile. Nothing stays in the formats directory after Close.
func TestFormatBudget(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	s.SetFormatBudget(time.Millisecond)
	var reqs []Request
	for i := range 6 {
		reqs = append(reqs, Request{Namespace: "default", Name: fmt.Sprintf("big-%d", i), CreateOptions: CreateOptions{Size: 1 << 40}})
	}
	_, err := s.Acquire("ctr", reqs)
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
	if _, err := s.Acquire("other", []Request{{Namespace: "default", Name: "plain"}}); err != nil {
		t.Errorf("an unsized volume while images are formatted: %v", err)
	}
	var vols []*Volume
	for deadline := time.Now().Add(2 * time.Minute); ; {
		vols, err = s.Acquire("ctr", reqs)
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
