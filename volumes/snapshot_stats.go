package volumes

import (
	"time"

	"github.com/nri-volumes/nri-volumes/internal/snapfs"
)

// Snapshots and clones are mostly made by the CLI, in processes of their
// own, so they reach the plugin's metrics as copy-ups of the hook do:
// through the store's copy-up log (copyup_stats.go), as records with an
// Event. Recording is best effort: a metric never fails an operation.
const (
	// EventFreeze records one freeze of a volume's file system, for a
	// snapshot, a live clone or an export, with how long it lasted.
	EventFreeze = "freeze"
	// EventClone records one clone made, with how its data was copied.
	EventClone = "clone"
)

// recordFreeze records a freeze that blocked writers for d.
func (s *Store) recordFreeze(d time.Duration) {
	_ = s.RecordCopyUp(CopyUpResult{Event: EventFreeze, Frozen: d})
}

// recordClone records a clone whose data was copied by m.
func (s *Store) recordClone(m snapfs.Method) {
	_ = s.RecordCopyUp(CopyUpResult{Event: EventClone, Copy: string(m)})
}

// recordCloneLocked is recordClone for a caller inside the store already,
// such as Acquire under the store's lock: one short append.
func (s *Store) recordCloneLocked(m snapfs.Method) {
	_ = s.recordLocked(CopyUpResult{Event: EventClone, Copy: string(m)})
}
