package plugin

import (
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// A container that names a volume without from: and has passed the check
// that no pull into it runs holds the name until its Acquire ends: a from:
// container that asks meanwhile is told to retry (ErrBusy) and starts no
// pull, so the pull never takes the volume the other container makes,
// empty, for one seeded already. The retry finds that volume and uses it as
// it is, as for a volume made before (the other container came first); and
// once a pull runs, a container without from: is refused until it ends.
func TestSeedWaitsForContainerWithoutFrom(t *testing.T) {
	store, err := volumes.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := config.Default()
	s := newSeeder()
	defer s.close()
	l := logrus.New()
	l.SetOutput(io.Discard)
	log := logrus.NewEntry(l)
	j := seedJob{req: volumes.Request{Namespace: "shop", Name: "pg"}, name: "pg", seed: Seed{Ref: "127.0.0.1:1/shop/pg:1"}, item: "1"}

	if _, ok := s.hold("shop/pg"); !ok {
		t.Fatal("hold refused with no pull running")
	}
	pull, err := s.start(cfg, store, "", j, log)
	if !errors.Is(err, volumes.ErrBusy) || pull != nil {
		t.Fatalf("start while a container without from: makes the volume: %v, %v; want ErrBusy and no pull", pull, err)
	}
	if _, err := store.Get("shop", "pg"); !errors.Is(err, volumes.ErrNotFound) {
		t.Fatalf("the refused pull made the volume: %v", err)
	}
	// The other container's Acquire makes it, then its hold ends.
	if _, _, err := store.Acquire("ctr1", []volumes.Request{{Namespace: "shop", Name: "pg"}}, nil); err != nil {
		t.Fatal(err)
	}
	s.release([]string{"shop/pg"})
	if pull, err := s.start(cfg, store, "", j, log); err != nil || pull != nil {
		t.Fatalf("start once the volume is made: %v, %v; want it used as it is", pull, err)
	}

	// A pull runs (into another volume): a container without from: is
	// refused, naming the reference.
	j2 := seedJob{req: volumes.Request{Namespace: "shop", Name: "pg2"}, name: "pg2", seed: Seed{Ref: "127.0.0.1:1/shop/pg:2"}, item: "1"}
	s.mu.Lock()
	s.pulls["shop/pg2"] = &seedPull{ref: j2.seed.Ref, done: make(chan struct{})}
	s.mu.Unlock()
	if ref, ok := s.hold("shop/pg2"); ok || ref != j2.seed.Ref {
		t.Fatalf("hold while a pull runs: %q, %v; want refused naming the reference", ref, ok)
	}
}
