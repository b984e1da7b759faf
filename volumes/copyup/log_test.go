package copyup

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// TestLogsThroughItsLogger checks that what a copy leaves out is logged to
// the logger in Options, with the path, and that nothing goes to the
// process's standard logger, which belongs to whoever embeds copy-up.
func TestLogsThroughItsLogger(t *testing.T) {
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data", 0o755)
	b.file("data/keep", "x", 0o644)
	if err := unix.Mkfifo(b.path("data/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	var global bytes.Buffer
	was, wasLevel := logrus.StandardLogger().Out, logrus.GetLevel()
	logrus.SetOutput(&global)
	logrus.SetLevel(logrus.DebugLevel)
	defer func() { logrus.SetOutput(was); logrus.SetLevel(wasLevel) }()

	var own bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&own)
	logger.SetLevel(logrus.DebugLevel)
	stats, err := Copy(l.rootfs, "/data", l.dst, Options{Log: logger.WithField("container", "c1")})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Skipped != 1 || stats.Files != 1 {
		t.Fatalf("stats %+v, want one file copied and the fifo skipped", stats)
	}
	if got := own.String(); !strings.Contains(got, "/data/fifo") || !strings.Contains(got, "container=c1") {
		t.Errorf("the given logger got %q, want the skipped fifo with the container", got)
	}
	if global.Len() != 0 {
		t.Errorf("the standard logger got %q, want nothing", global.String())
	}
	// Without a logger the copy logs nothing anywhere.
	l2 := newLayout(t)
	tree{t, l2.rootfs}.dir("data", 0o755)
	if err := unix.Mkfifo(tree{t, l2.rootfs}.path("data/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(l2.rootfs, "/data", l2.dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if global.Len() != 0 {
		t.Errorf("the standard logger got %q with no logger given, want nothing", global.String())
	}
}
