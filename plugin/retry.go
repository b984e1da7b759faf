package plugin

import (
	"errors"
	"sync"
	"time"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// Pauses between two tries of a removal that found the store busy.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
)

// removal is the store work of a RemoveContainer or RemovePodSandbox.
type removal struct {
	what string // for the log: "container NS/POD/NAME", "pod NS/NAME"
	run  func() error
}

// retries runs, in the background and in order, the removals that gave up
// on the store's lock (ErrBusy, a CLI held it longer than lockTimeout):
// containerd does not send them again, so without a retry a gone container
// would keep its references and pins and a gone pod its anonymous volumes
// until the plugin restarts. Each try waits lockTimeout at most, and a
// removal is tried until it no longer finds the store busy. The queue lives
// in memory only: after a restart, Synchronize removes what it held.
//
// The retrying goroutine runs exactly while the queue is not empty: it takes
// a removal off only after running it.
type retries struct {
	mu    sync.Mutex
	queue []removal
	stop  chan struct{}
}

func newRetries() *retries {
	return &retries{stop: make(chan struct{})}
}

// remove runs r now, or queues it behind removals already waiting so that
// a pod's anonymous volumes go after the release of its containers. A busy
// store queues it too. It returns r's error, or nil once r is queued.
func (p *Plugin) remove(r removal) error {
	q := p.retries
	q.mu.Lock()
	if len(q.queue) > 0 {
		q.queue = append(q.queue, r)
		q.mu.Unlock()
		p.log.WithField("what", r.what).Info("removal queued behind removals waiting for the busy volume store")
		return nil
	}
	q.mu.Unlock()
	err := r.run()
	if !errors.Is(err, volumes.ErrBusy) {
		return err
	}
	q.mu.Lock()
	start := len(q.queue) == 0
	q.queue = append(q.queue, r)
	if start {
		go p.retry()
	}
	q.mu.Unlock()
	p.log.WithField("what", r.what).WithError(err).Warn("volume store busy: the removal is retried in the background")
	return nil
}

// retry works through the queue until it is empty or the plugin closes.
func (p *Plugin) retry() {
	q := p.retries
	delay := retryMin
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.mu.Unlock()
			return
		}
		r := q.queue[0]
		q.mu.Unlock()
		select {
		case <-q.stop:
			return
		case <-time.After(delay):
		}
		err := r.run()
		if errors.Is(err, volumes.ErrBusy) {
			delay = min(2*delay, retryMax)
			continue
		}
		delay = retryMin
		log := p.log.WithField("what", r.what)
		if err != nil {
			log.WithError(err).Error("retried removal failed")
		} else {
			log.Info("retried removal done")
		}
		q.mu.Lock()
		q.queue = q.queue[1:]
		q.mu.Unlock()
	}
}

// close stops the retries; what is still queued is left to the Synchronize
// of the next start.
func (q *retries) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-q.stop:
	default:
		close(q.stop)
	}
}
