package volumes

import (
	"time"

	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/internal/copyuplog"
)

// The log of copy-ups, freezes and clones for the plugin's metrics is
// copyUpStatsFile; package copyuplog keeps it. The names below let callers
// outside the store, which cannot import it, use what CopyUpLog returns.

// CopyUpLog is the store's log of copy-ups, freezes and clones, as the
// Store hands it out: to record and to read, never to close, which the
// Store does.
type CopyUpLog struct{ l *copyuplog.Log }

// Record appends r to the log.
func (c CopyUpLog) Record(r CopyUpResult) error { return c.l.Record(r) }

// NewReader returns a reader of the records written from now on.
func (c CopyUpLog) NewReader() (*CopyUpReader, error) { return c.l.NewReader() }

// CopyUpReader reads the records of a CopyUpLog written since it last read.
type CopyUpReader = copyuplog.Reader

// CopyUpResult is one record of a CopyUpLog: what one copy-up of the hook
// did, or a freeze or a clone (Event).
type CopyUpResult = copyuplog.Record

// Reasons a copy-up failed, for CopyUpResult.Reason.
const (
	CopyUpLimit     = copyuplog.ReasonLimit     // limits.copyUpMaxSize or copyUpMaxFiles
	CopyUpPodBudget = copyuplog.ReasonPodBudget // limits.copyUpMaxSizePerPod
	CopyUpNoSpace   = copyuplog.ReasonNoSpace   // the volume's size or its file system
	CopyUpOther     = copyuplog.ReasonOther
)

// Events of CopyUpResult.Event: snapshots and clones are mostly made by the
// CLI, in processes of their own, so they reach the plugin's metrics as
// copy-ups of the hook do, through the log.
const (
	// EventFreeze records one freeze of a volume's file system, for a
	// snapshot, a live clone or an export, with how long it lasted.
	EventFreeze = copyuplog.EventFreeze
	// EventClone records one clone made, with how its data was copied.
	EventClone = copyuplog.EventClone
)

// recordFreeze records a freeze that blocked writers for d. Recording is
// best effort: a metric never fails an operation.
func recordFreeze(l *copyuplog.Log, d time.Duration) {
	_ = l.Record(CopyUpResult{Event: EventFreeze, Frozen: d})
}

// recordClone records a clone whose data was copied by m. The log has a
// lock of its own, so a caller may hold the store's.
func recordClone(l *copyuplog.Log, m snapfs.Method) {
	_ = l.Record(CopyUpResult{Event: EventClone, Copy: string(m)})
}
