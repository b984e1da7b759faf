package volumes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// ErrBusy means a wait for the store's lock ran out of time: another
// operation, most likely of another process (a CLI prune or rm), held it.
var ErrBusy = errors.New("volume store busy")

// Polling bounds for a lock wait with a deadline: flock(2) has no timeout,
// so such a wait tries LOCK_NB and sleeps between tries, starting short so
// that a lock freed between the batches of a long operation is taken.
const (
	pollMin = 250 * time.Microsecond
	pollMax = time.Millisecond
)

// SetLockTimeout bounds every wait for the store's lock of Acquire, Release,
// RemovePodVolumes and SetReferences: after d they fail with ErrBusy and a
// message that names what they waited for. The plugin sets it below
// containerd's NRI request timeout, which would otherwise drop the plugin.
// Zero, the default (the CLI's), waits as long as it takes.
func (s *Store) SetLockTimeout(d time.Duration) {
	s.lockTimeout.Store(int64(d))
}

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

// flockContext takes the flock how (LOCK_SH or LOCK_EX) of fd, waiting no
// longer than ctx allows.
func flockContext(ctx context.Context, fd, how int) error {
	if ctx.Done() == nil {
		return flockRetry(fd, how)
	}
	delay := pollMin
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		if err == nil || !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		delay = min(2*delay, pollMax)
	}
}

func flockRetry(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// busyError explains a wait that ran out of time: what the operation was
// for, which lock it waited for and for how long.
func (s *Store) busyError(what, lock string, start time.Time) error {
	return fmt.Errorf("%s: %w: gave up after %s waiting for %s",
		what, ErrBusy, time.Since(start).Round(time.Millisecond), lock)
}

// lockVolume opens the directory of volume name in namespace ns and takes
// its flock of kind how (LOCK_EX or LOCK_SH): the lock of that volume alone,
// which CopyUp, ChownRoot and Import hold exclusively, Export shared, and
// Remove tests. It makes sure the directory locked is still the volume, as
// Remove renames a volume away under this lock. The lock goes with the
// returned descriptor.
func (s *Store) lockVolume(ns, name string, how int) (int, error) {
	if err := ValidateNamespace(ns); err != nil {
		return -1, err
	}
	if err := ValidateName(name); err != nil {
		return -1, err
	}
	nsFd, err := s.openNamespace(ns)
	if err != nil {
		return -1, publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	volFd, err := fsx.OpenDir(nsFd, name)
	if err != nil {
		return -1, publicError(ns, name, err)
	}
	if err := flockRetry(volFd, how); err != nil {
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
