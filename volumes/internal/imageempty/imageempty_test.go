package imageempty

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRecords records targets of two images, finds them, removes those of
// the image that keep refuses, and leaves entries that are no record.
func TestRecords(t *testing.T) {
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for _, r := range []struct{ digest, target string }{{a, "/data"}, {a, "/var/lib/x"}, {b, "/data"}, {a, "/data"}} {
		if err := Record(fd, Name(r.digest, r.target), 4<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := Record(fd, "not-a-record", 4<<20); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveAllBut(fd, func(h string) bool { return h == b })
	if err != nil || removed != 2 {
		t.Errorf("RemoveAllBut = %d, %v; want 2 removed", removed, err)
	}
	for _, c := range []struct {
		path string
		want bool
	}{{Name(a, "/data"), false}, {Name(b, "/data"), true}, {Name(b, "/other"), false}, {"not-a-record", true}} {
		if got, err := Has(fd, c.path); err != nil || got != c.want {
			t.Errorf("Has(%s) = %t, %v; want %t", c.path, got, err, c.want)
		}
	}
	if err := Record(fd, Name(a, "/more"), 1); !errors.Is(err, ErrFull) {
		t.Errorf("Record past the bound = %v, want ErrFull", err)
	}
}
