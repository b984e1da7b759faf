package copyuplog

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func openLog(t *testing.T) (*Log, string) {
	t.Helper()
	dir := t.TempDir()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	l, err := Open(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, dir
}

func readAll(t *testing.T, r *Reader) []Record {
	t.Helper()
	var got []Record
	if err := r.Read(func(rec Record) { got = append(got, rec) }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestRotate checks that the log stays bounded, and that a reader loses
// nothing across one rotation between two reads.
func TestRotate(t *testing.T) {
	l, dir := openLog(t)
	r, err := l.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	rec := Record{Bytes: 1 << 40, Files: 1 << 20, Duration: time.Hour}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	line := len(b) + 1
	n := maxBytes/line + 10 // just past one rotation
	for range n {
		if err := l.Record(rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, OldFile)); err != nil {
		t.Fatalf("the log was not rotated: %v", err)
	}
	if got := len(readAll(t, r)); got != n {
		t.Errorf("read %d copy-ups across a rotation, want %d", got, n)
	}
	// Two more rotations: the log never holds more than the two files.
	for range 2 * n {
		if err := l.Record(rec); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := os.Stat(filepath.Join(dir, File))
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(filepath.Join(dir, OldFile))
	if err != nil {
		t.Fatal(err)
	}
	if cur.Size() > maxBytes+int64(line) || old.Size() > maxBytes+int64(line) {
		t.Errorf("the log grew past its bound: %d and %d bytes", cur.Size(), old.Size())
	}
	// What went with the oldest file is lost, the rest is read.
	if got := len(readAll(t, r)); got == 0 || got > 2*n {
		t.Errorf("read %d copy-ups after two rotations, want at most %d", got, 2*n)
	}
}

// TestClosed checks that a closed log, and a reader of it, fail rather
// than use a descriptor that may since name another file.
func TestClosed(t *testing.T) {
	l, _ := openLog(t)
	r, err := l.NewReader()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(Record{}); !errors.Is(err, errClosed) {
		t.Errorf("Record after Close: %v", err)
	}
	if err := r.Read(func(Record) { t.Error("read a record after Close") }); !errors.Is(err, errClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := l.NewReader(); !errors.Is(err, errClosed) {
		t.Errorf("NewReader after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
