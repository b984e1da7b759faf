package volumes

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// Polling bounds for a lock wait with a deadline: flock(2) has no timeout,
// so such a wait tries LOCK_NB and sleeps between tries, starting short so
// that a lock freed between the batches of a long operation is taken.
const (
	pollMin = 250 * time.Microsecond
	pollMax = time.Millisecond
)

// requestContext returns the context a bounded operation waits with, and
// its cancel function.
func (s *Store) requestContext() (context.Context, context.CancelFunc) {
	if d := time.Duration(s.lockTimeout.Load()); d > 0 {
		return context.WithTimeout(context.Background(), d)
	}
	return context.Background(), func() {}
}

// enter takes the Store's in-process lock, waiting no longer than ctx allows.
func (s *Store) enter(ctx context.Context) error {
	if ctx.Done() == nil {
		s.sem <- struct{}{}
		return nil
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) leave() { <-s.sem }

// pollMaxUnbounded caps the pause between two tries of a wait without a
// deadline, which may last as long as a CLI's whole store walk.
const pollMaxUnbounded = 20 * time.Millisecond

// lockBoth takes the in-process lock and the flock how (LOCK_SH or LOCK_EX)
// of the lock file, waiting no longer than ctx allows; on success the
// caller holds both. It never holds the in-process lock while it waits for
// the flock: it tries LOCK_NB and, if another process holds the flock,
// leaves the in-process lock to the operations of this process before it
// tries again. A wait without a deadline (Stats.Ping, List, a CLI command) thus
// never makes a request of this process wait past its own deadline.
func (s *Store) lockBoth(ctx context.Context, how int) error {
	_, bounded := ctx.Deadline()
	delay, maxDelay := pollMin, pollMax
	if !bounded {
		maxDelay = pollMaxUnbounded
	}
	var timer *time.Timer
	for tried := false; ; tried = true {
		if err := s.enter(ctx); err != nil {
			if tried {
				// The last try found the flock held elsewhere.
				return err
			}
			return errSemTimeout
		}
		if s.closed {
			s.leave()
			return errStoreClosed
		}
		err := unix.Flock(int(s.lock.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		s.leave()
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock volume store: %w", err)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		delay = min(2*delay, maxDelay)
	}
}

// enterOpen takes the in-process lock for a short use of the store's
// descriptors, waiting no longer than WithLockTimeout allows, and fails if
// the store is closed. what says, for the error, what the wait was for.
func (s *Store) enterOpen(what string) error {
	ctx, cancel := s.requestContext()
	defer cancel()
	start := time.Now()
	if err := s.enter(ctx); err != nil {
		return s.busyError(what, "another operation of this process on the volume store", start)
	}
	if s.closed {
		s.leave()
		return errStoreClosed
	}
	return nil
}

// errStoreClosed is the error of an operation on a closed store.
var errStoreClosed = errors.New("volume store is closed")

// whileOpen runs fn, a short read through the store's descriptors that
// does not take the in-process lock (an NRI request that must not wait for
// this process's other operations), while those descriptors stay open: a
// closed store fails it rather than fn reading a descriptor closed, or
// reused by another open. It waits at most for Close's own close calls;
// fn must not take the in-process lock, which Close holds meanwhile.
func (s *Store) whileOpen(fn func() error) error {
	s.fds.RLock()
	defer s.fds.RUnlock()
	if s.fdsClosed {
		return errStoreClosed
	}
	return fn()
}

// busyError explains a wait that ran out of time: what the operation was
// for, which lock it waited for and for how long.
func (s *Store) busyError(what, lock string, start time.Time) error {
	return fmt.Errorf("%s: %w: gave up after %s waiting for %s",
		what, ErrBusy, time.Since(start).Round(time.Millisecond), lock)
}

// lockVolume opens the directory of volume name in namespace ns and takes
// its flock of kind how (LOCK_EX or LOCK_SH): the lock of that volume alone,
// which CopyUps.Copy, CopyUps.ChownRoot and Import hold exclusively, Export
// shared, and Remove tests. It makes sure the directory locked is still the volume, as
// Remove renames a volume away under this lock. The lock goes with the
// returned descriptor.
func (s *Store) lockVolume(ns, name string, how int) (int, error) {
	nsFd, volFd, err := s.openVolume(ns, name)
	if err != nil {
		return -1, err
	}
	defer unix.Close(nsFd)
	if err := fsx.Flock(volFd, how); err != nil {
		unix.Close(volFd)
		return -1, volumeError(ns, name, err)
	}
	held, err := fsx.Fstat(volFd)
	if err != nil {
		unix.Close(volFd)
		return -1, volumeError(ns, name, err)
	}
	cur, err := fsx.Lstat(nsFd, name)
	if err != nil || cur.Ino != held.Ino || cur.Dev != held.Dev {
		unix.Close(volFd)
		return -1, volumeError(ns, name, ErrNotFound)
	}
	return volFd, nil
}

// openVolume validates ns and name and opens, outside the store lock, the
// namespace directory and the volume's directory below it. The caller closes
// both.
func (s *Store) openVolume(ns, name string) (nsFd, volFd int, err error) {
	if err := ValidateNamespace(ns); err != nil {
		return -1, -1, err
	}
	if err := ValidateName(name); err != nil {
		return -1, -1, err
	}
	nsFd, err = s.openNamespace(ns)
	if err != nil {
		return -1, -1, publicError(ns, name, err)
	}
	volFd, err = fsx.OpenDir(nsFd, name)
	if err != nil {
		unix.Close(nsFd)
		return -1, -1, publicError(ns, name, err)
	}
	return nsFd, volFd, nil
}

// openData is lockVolume that also opens the volume's _data. The caller
// closes both descriptors; the lock goes with the first.
func (s *Store) openData(ns, name string, how int) (volFd, dataFd int, err error) {
	volFd, err = s.lockVolume(ns, name, how)
	if err != nil {
		return -1, -1, err
	}
	dataFd, err = fsx.OpenDir(volFd, dataDir)
	if err != nil {
		unix.Close(volFd)
		return -1, -1, publicError(ns, name, fmt.Errorf("%w: %w", errBroken, err))
	}
	return volFd, dataFd, nil
}

// lockWaitObserver, when set, is told how long each store operation waited
// for the store's mutex and flock. It is process-wide so that it survives the
// plugin reopening its store on a new configuration.
var lockWaitObserver atomic.Pointer[func(time.Duration)]

// ObserveLockWait makes every Store in this process report how long each
// operation waited for the store lock to fn (nil stops it). fn must be quick
// and safe for concurrent use; metrics use it.
func ObserveLockWait(fn func(time.Duration)) {
	if fn == nil {
		lockWaitObserver.Store(nil)
		return
	}
	lockWaitObserver.Store(&fn)
}

func observeLockWait(start time.Time) {
	if fn := lockWaitObserver.Load(); fn != nil {
		(*fn)(time.Since(start))
	}
}

// openNamespace opens a namespace directory outside the store lock.
func (s *Store) openNamespace(ns string) (int, error) {
	if err := s.enterOpen("opening namespace " + ns); err != nil {
		return -1, err
	}
	defer s.leave()
	return fsx.OpenDir(s.dirFd, ns)
}

// openStoreDir opens ROOT/volumes for a reader that does not hold the lock.
func (s *Store) openStoreDir() (int, error) {
	if err := s.enterOpen("opening the volume store"); err != nil {
		return -1, err
	}
	defer s.leave()
	return fsx.OpenDir(s.dirFd, ".")
}

func (s *Store) readGen() (uint64, error) {
	var b [8]byte
	n, err := unix.Pread(int(s.lock.Fd()), b[:], 0)
	if err != nil {
		return 0, fmt.Errorf("read store generation: %w", err)
	}
	if n < len(b) {
		return 0, nil
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
