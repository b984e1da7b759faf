package volumes

import (
	"context"
	"time"
)

// Option configures a Store at Open.
type Option func(*openOptions)

type openOptions struct {
	ctx          context.Context
	sweep        bool
	lockTimeout  time.Duration
	formatBudget time.Duration
	policy       *SizePolicy // nil: not given
	repairs      func(string)
}

// WithContext bounds Open's wait for the store's lock: it gives up when ctx
// is done, with ErrBusy. The plugin opens a new root inside an NRI request
// (Configure) and must answer within containerd's request timeout.
func WithContext(ctx context.Context) Option {
	return func(o *openOptions) { o.ctx = ctx }
}

// WithoutSweep leaves what killed processes left in the store (temporary
// entries, abandoned freezes and formats, stale pins) to the next Open that
// sweeps: for a short-lived process that only copies up (the OCI hook, on
// the path of a container's start), to which a walk of every namespace
// would add latency.
func WithoutSweep() Option {
	return func(o *openOptions) { o.sweep = false }
}

// WithLockTimeout bounds every wait for the store's lock of Acquire,
// Release, RemovePodVolumes and SetReferences: after d they fail with
// ErrBusy and a message that names what they waited for. The plugin sets it
// below containerd's NRI request timeout, which would otherwise drop the
// plugin. Zero, the default (the CLI's), waits as long as it takes.
func WithLockTimeout(d time.Duration) Option {
	return func(o *openOptions) { o.lockTimeout = d }
}

// WithFormatBudget bounds how long Acquire waits for the images of its new
// sized volumes to be formatted (see format.go); 0, the default, waits as
// long as it takes. The plugin keeps it well inside containerd's request
// timeout.
func WithFormatBudget(d time.Duration) Option {
	return func(o *openOptions) { o.formatBudget = d }
}

// WithRepairs has Open tell fn, one by one, what it found broken and
// repaired (a ledger of sizes cut short by a power loss, rebuilt), for the
// caller to log as a warning.
func WithRepairs(fn func(repair string)) Option {
	return func(o *openOptions) { o.repairs = fn }
}

// WithSizePolicy sets how the store makes sized volumes.
func WithSizePolicy(p SizePolicy) Option {
	return func(o *openOptions) { o.policy = &p }
}

// Reconfigure applies, from now on, the options of a configuration reload
// to a store that stays open: WithLockTimeout, WithFormatBudget and
// WithSizePolicy; what it is not given stays as it was, and the options
// that only Open uses (WithContext, WithoutSweep, WithRepairs) do nothing
// here. The plugin's Configure with a new configuration for the same root
// keeps its store, whose reaper, spares and formatted images a reopen would
// throw away.
func (s *Store) Reconfigure(opts ...Option) {
	o := openOptions{
		lockTimeout:  time.Duration(s.lockTimeout.Load()),
		formatBudget: time.Duration(s.formatBudget.Load()),
	}
	for _, opt := range opts {
		opt(&o)
	}
	// The bounds are atomic so that a reload never waits for a running
	// operation; the policy is read under the in-process lock.
	s.lockTimeout.Store(int64(o.lockTimeout))
	s.formatBudget.Store(int64(o.formatBudget))
	if o.policy != nil {
		s.enter(context.Background())
		defer s.leave()
		s.policy = *o.policy
	}
}
