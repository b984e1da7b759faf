package volumes

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// Stats are what the store tells about itself without a walk of its
// volumes: the metrics read the counts and sums (Namespaces, Totals) at
// every scrape, /healthz checks that the store is usable (Ping), and the
// CLI's ls shows the totals. It is a view of the Store; each answer is
// O(1) per namespace at most.
type Stats struct{ s *Store }

// Stats returns what the store tells about itself.
func (s *Store) Stats() Stats { return Stats{s} }

// Ping checks that the store is usable: open, its lock can be taken, and its
// directory is still the one it opened. It reads nothing else, so a health
// check can call it often. A wait for the lock longer than ctx allows fails
// with ErrBusy.
func (o Stats) Ping(ctx context.Context) error {
	s := o.s
	return s.locked(ctx, "volume store health check", unix.LOCK_SH, false, func() error {
		var st unix.Stat_t
		if err := unix.Stat(s.dir, &st); err != nil {
			return fmt.Errorf("volume store %s: %w", s.dir, err)
		}
		held, err := fsx.Fstat(s.dirFd)
		if err != nil {
			return fmt.Errorf("volume store %s: %w", s.dir, err)
		}
		if st.Dev != held.Dev || st.Ino != held.Ino {
			return fmt.Errorf("volume store %s: the directory was replaced since the store opened", s.dir)
		}
		return nil
	})
}
