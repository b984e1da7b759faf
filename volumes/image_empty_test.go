package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageTargetsEmpty records targets of two images, finds them again
// through a reopened store, removes those of the image that keep refuses and
// keeps the rest; bad digests are refused before anything is written.
func TestImageTargetsEmpty(t *testing.T) {
	s, root := newStore(t)
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for _, r := range []struct{ digest, target string }{{a, "/data"}, {a, "/var/lib/x"}, {b, "/data"}} {
		if err := s.EmptyTargets().Record(r.digest, r.target); err != nil {
			t.Fatal(err)
		}
	}
	// Recording again is no error.
	if err := s.EmptyTargets().Record(a, "/data"); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, root)
	check := func(digest, target string, want bool) {
		t.Helper()
		if got, err := s.EmptyTargets().Has(digest, target); err != nil || got != want {
			t.Errorf("ImageTargetEmpty(%s, %s) = %t, %v; want %t", digest[:4], target, got, err, want)
		}
	}
	check(a, "/data", true)
	check(a, "/var/lib/x", true)
	check(a, "/other", false)
	check(b, "/data", true)
	check(b, "/var/lib/x", false)

	// Not a record: left alone.
	stray := filepath.Join(root, "volumes", imageEmptyDir, "stray")
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := s.EmptyTargets().RemoveAllBut(func(digestHex string) bool { return digestHex == b })
	if err != nil || n != 2 {
		t.Fatalf("removed %d, %v; want the 2 records of image a", n, err)
	}
	check(a, "/data", false)
	check(a, "/var/lib/x", false)
	check(b, "/data", true)
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("an entry that is no record: %v", err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("volume check: %+v, %v; want no problem", probs, err)
	}

	for _, bad := range []string{"", "sha256:" + a, strings.ToUpper(a), a[:63], "../" + a[3:]} {
		if err := s.EmptyTargets().Record(bad, "/data"); !errors.Is(err, ErrInvalid) {
			t.Errorf("digest %q: %v, want ErrInvalid", bad, err)
		}
		if _, err := s.EmptyTargets().Has(bad, "/data"); !errors.Is(err, ErrInvalid) {
			t.Errorf("digest %q: %v, want ErrInvalid", bad, err)
		}
	}
}

// TestParseImageDigest accepts containerd's config digests only.
func TestParseImageDigest(t *testing.T) {
	h := strings.Repeat("0f", 32)
	if got, err := ParseImageDigest("sha256:" + h); err != nil || got != h {
		t.Errorf("ParseImageDigest: %q, %v", got, err)
	}
	for _, bad := range []string{"", h, "sha512:" + h, "sha256:" + strings.ToUpper(h), "sha256:" + h + "0"} {
		if _, err := ParseImageDigest(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseImageDigest(%q): %v, want ErrInvalid", bad, err)
		}
	}
}

// TestMarkCopyUpEmpty: a new volume is marked done as it is; one whose copy
// was cut short, or whose _data is not root's 0755 when that matters, is
// left to CopyUp; a filled one is left alone.
func TestMarkCopyUpEmpty(t *testing.T) {
	s, root := newStore(t)
	volDir := func(name string) string { return filepath.Join(root, "volumes", "default", name) }
	for _, name := range []string{"new", "cut", "owned", "filled"} {
		if _, err := s.Create("default", name, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(volDir("cut"), copyUpStarted), "")
	if err := os.Chown(filepath.Join(volDir("owned"), dataDir), 7, 7); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(volDir("filled"), dataDir, "f"), "x")
	for _, tc := range []struct {
		name               string
		rootDefault        bool
		marked, copyNeeded bool
		doneAfter          bool
	}{
		{"new", true, true, false, true},
		{"new", true, false, false, true}, // done already
		{"cut", false, false, true, false},
		{"owned", true, false, true, false},
		{"owned", false, true, false, true},
		{"filled", false, false, false, false},
	} {
		marked, copyNeeded, err := s.CopyUps().MarkEmpty("default", tc.name, tc.rootDefault)
		if err != nil || marked != tc.marked || copyNeeded != tc.copyNeeded {
			t.Errorf("%s (rootDefault %t): marked %t, copyNeeded %t, %v; want %t, %t", tc.name, tc.rootDefault, marked, copyNeeded, err, tc.marked, tc.copyNeeded)
		}
		if _, err := os.Stat(filepath.Join(volDir(tc.name), copyUpDone)); (err == nil) != tc.doneAfter {
			t.Errorf("%s: done marker: %v, want it there: %t", tc.name, err, tc.doneAfter)
		}
	}
	if _, _, err := s.CopyUps().MarkEmpty("default", "gone", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("a volume that does not exist: %v, want ErrNotFound", err)
	}
}

// TestImageTargetsEmptyBounded: once the records' directory passes its size
// bound, no more are made, with an error that says so; those made before
// still answer.
func TestImageTargetsEmptyBounded(t *testing.T) {
	s, _ := newStore(t)
	a := strings.Repeat("a", 64)
	if err := s.EmptyTargets().Record(a, "/first"); err != nil {
		t.Fatal(err)
	}
	defer func(old int64) { maxImageEmptyDirBytes = old }(maxImageEmptyDirBytes)
	maxImageEmptyDirBytes = 1 // any directory is larger
	err := s.EmptyTargets().Record(a, "/second")
	if err == nil || !strings.Contains(err.Error(), "records are full") {
		t.Fatalf("RecordImageTargetEmpty past the bound = %v, want an error saying the records are full", err)
	}
	if got, err := s.EmptyTargets().Has(a, "/second"); err != nil || got {
		t.Errorf("/second recorded past the bound: %t, %v", got, err)
	}
	if got, err := s.EmptyTargets().Has(a, "/first"); err != nil || !got {
		t.Errorf("/first lost: %t, %v", got, err)
	}
}
