package volumes

import (
	"maps"

	"golang.org/x/sys/unix"
)

// NamespaceCount is what a namespace holds, as the metrics report it.
type NamespaceCount struct {
	// Named and Anonymous count the namespace's volumes of each kind.
	Named, Anonymous int
	// LimitBytes sums the sizes of its sized volumes (of Sized).
	LimitBytes int64
	// Sized are its sized volumes, by name, with their sizes and backends,
	// so that their usage can be measured without reading their metadata.
	Sized map[string]Volume
}

// nsCounts keeps a NamespaceCount per namespace in memory, so a scrape
// answers in O(1) per namespace instead of reading every volume.json. This
// Store's own creations, removals and growths update it under the lock; it
// is valid while the store's generation is gen, so a change by another
// process (the CLI) makes the next Stats.Namespaces read the store again.
type nsCounts struct {
	gen uint64
	ns  map[string]*nsCount
}

// nsCount is one namespace's count, with the names it counted (true for an
// anonymous volume), so that a volume is counted once and uncounted only if
// it was counted.
type nsCount struct {
	NamespaceCount
	names map[string]bool
}

func (c *nsCounts) entry(ns string) *nsCount {
	n := c.ns[ns]
	if n == nil {
		n = &nsCount{NamespaceCount: NamespaceCount{Sized: map[string]Volume{}}, names: map[string]bool{}}
		c.ns[ns] = n
	}
	return n
}

// add counts v, which now exists.
func (c *nsCounts) add(v *Volume) {
	n := c.entry(v.Namespace)
	if _, ok := n.names[v.Name]; ok {
		return
	}
	n.names[v.Name] = v.Anonymous
	if v.Anonymous {
		n.Anonymous++
	} else {
		n.Named++
	}
	if v.Limit > 0 {
		n.Sized[v.Name] = Volume{Namespace: v.Namespace, Name: v.Name, Anonymous: v.Anonymous, Limit: v.Limit, Backend: v.Backend}
	}
}

// drop uncounts the volume name of namespace ns, which is gone.
func (c *nsCounts) drop(ns, name string) {
	n := c.ns[ns]
	if n == nil {
		return
	}
	anonymous, ok := n.names[name]
	if !ok {
		return
	}
	delete(n.names, name)
	if anonymous {
		n.Anonymous--
	} else {
		n.Named--
	}
	delete(n.Sized, name)
	if len(n.names) == 0 {
		delete(c.ns, ns)
	}
}

// counted calls fn with the counts when they reflect the store as this
// Store last saw it; it runs under the lock of a mutation, which then
// bumps the generation (see bumpCounts).
func (s *Store) counted(fn func(c *nsCounts)) {
	if s.counts != nil && s.counts.gen == s.gen {
		fn(s.counts)
	}
}

// bumpCounts carries the counts from generation from to to, when they
// were valid at from: the mutation between updated them.
func (s *Store) bumpCounts(from, to uint64) {
	if s.counts != nil && s.counts.gen == from {
		s.counts.gen = to
	}
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

func (c *nsCounts) copy() map[string]NamespaceCount {
	out := make(map[string]NamespaceCount, len(c.ns))
	for ns, n := range c.ns {
		cp := n.NamespaceCount
		cp.Sized = maps.Clone(n.Sized)
		for _, v := range cp.Sized {
			cp.LimitBytes += v.Limit
		}
		out[ns] = cp
	}
	return out
}
