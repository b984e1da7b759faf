package volumes

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// What the store tells about itself (Stats): its health, the counts of
// each namespace and the totals of its sizes, each answered from memory.

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

// Namespaces returns the volumes of every namespace, counted, with the
// sum of their sizes. It answers from memory in O(1) per namespace; only
// after another process changed the store does it read every volume's
// metadata again, once, outside the lock. The result is the caller's.
func (o Stats) Namespaces() (map[string]NamespaceCount, error) {
	s := o.s
	for range 3 {
		var out map[string]NamespaceCount
		var gen uint64
		err := s.withLock(unix.LOCK_SH, func() error {
			gen = s.gen
			if s.counts != nil && s.counts.gen == s.gen {
				out = s.counts.copy()
			}
			return nil
		})
		if err != nil || out != nil {
			return out, err
		}
		c, err := s.scanCounts()
		if err != nil {
			return nil, err
		}
		err = s.withLock(unix.LOCK_SH, func() error {
			if s.gen == gen {
				c.gen = gen
				s.counts, out = c, c.copy()
			}
			return nil
		})
		if err != nil || out != nil {
			return out, err
		}
		// The store changed during the scan: scan again.
	}
	c, err := s.scanCounts()
	if err != nil {
		return nil, err
	}
	return c.copy(), nil
}

// scanCounts counts the store's volumes from their metadata.
func (s *Store) scanCounts() (*nsCounts, error) {
	dirFd, err := s.openStoreDir()
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirFd)
	c := &nsCounts{ns: map[string]*nsCount{}}
	err = scanAt(dirFd, "", func(ns string, nsFd int, name string) error {
		if v, err := s.loadVolume(nsFd, ns, name); err == nil {
			c.add(v)
		}
		return nil
	})
	return c, err
}

// SizeTotals is what the node's sized volumes add up to against its bound.
type SizeTotals struct {
	// Sized is the sum of the sizes of every sized volume and their count.
	Sized SizeSum
	// FileSystem is the size of the store's file system.
	FileSystem int64
	// Bound is limits.overcommit times FileSystem; 0: no bound.
	Bound int64
}

// Totals returns the node's sums of sizes from the ledger, the store's
// file-system size and the bound: O(1).
func (o Stats) Totals() (SizeTotals, error) {
	s := o.s
	var t SizeTotals
	err := s.withLock(unix.LOCK_SH, func() error {
		fsSize, err := s.fileSystemSize()
		if err != nil {
			return err
		}
		t = SizeTotals{Sized: s.idx.sizes.total, FileSystem: fsSize, Bound: s.policy.nodeBytes(fsSize)}
		return nil
	})
	return t, err
}
