package volumes

import (
	"maps"
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
