package metrics_test

import (
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/metrics"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// TestCopyUpLogNegativeBytes: the copy-up log is read back "never
// unchecked" for labels, but bytes go straight into a Prometheus counter,
// whose Add panics on a negative value; the reader has not moved past the
// line (fn runs before r.off advances), so every later scrape fails too.
func TestCopyUpLogNegativeBytes(t *testing.T) {
	store, err := volumes.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := metrics.New(func() *volumes.Store { return store }).Handler()
	get(t, h, "/metrics") // the collector starts reading the log
	if err := store.CopyUpLog().Record(volumes.CopyUpResult{Bytes: -5}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if code, _ := get(t, h, "/metrics"); code != 200 {
			t.Errorf("scrape %d after a bad record: %d", i+1, code)
		}
	}
}
