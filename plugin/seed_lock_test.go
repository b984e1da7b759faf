package plugin

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// The seeder's check of a from: volume runs inside CreateContainer: it must
// not wait for the store's lock without bound while another process (a CLI
// command) holds it, or containerd drops the plugin at its request timeout.
// A volume appears complete under its name, so the check needs no lock.
func TestSeedStartDoesNotWaitForTheStoreLock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	store, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, _, err := store.Acquire("ctr1", []volumes.Request{{Namespace: "shop", Name: "seeded"}}, nil); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	s := newSeeder()
	defer s.close()
	l := logrus.New()
	l.SetOutput(io.Discard)
	log := logrus.NewEntry(l)

	// Another process holds the store's lock, as a CLI command does.
	lock, err := os.OpenFile(filepath.Join(root, "volumes", ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		}
	}
	defer release()

	for _, name := range []string{"seeded", "new"} {
		j := seedJob{req: volumes.Request{Namespace: "shop", Name: name}, name: name, seed: Seed{Ref: "127.0.0.1:1/shop/" + name + ":1"}, item: "1"}
		type result struct {
			pull *seedPull
			err  error
		}
		done := make(chan result, 1)
		go func() {
			p, err := s.start(cfg, store, "", j, log)
			done <- result{p, err}
		}()
		select {
		case r := <-done:
			if name == "seeded" && (r.err != nil || r.pull != nil) {
				t.Errorf("start for a volume seeded already: %v, %v; want it used as it is", r.pull, r.err)
			}
			if name == "new" && (r.err != nil || r.pull == nil) {
				t.Errorf("start for a new volume: %v, %v; want a pull started", r.pull, r.err)
			}
		case <-time.After(30 * time.Second):
			// Not a timing assertion: without the fix it waits until the
			// lock is released, however long that is.
			release()
			<-done
			t.Fatalf("start for volume %q waited for the store's lock held by another process", name)
		}
	}
}
