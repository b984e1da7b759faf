package volumes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// ChargePodCopyUp runs fn with the bytes that copy-ups for pod sandbox podID
// wrote so far, and adds the bytes fn reports it wrote. It holds a lock on
// the pod's record throughout, so the copy-ups of one pod's containers take
// turns and together stay within the budget fn enforces. fn reports what it
// wrote even when it fails part-way.
func (s *Store) ChargePodCopyUp(podID string, fn func(used int64) (written int64, err error)) error {
	return s.chargePodCopyUp(podID, unix.LOCK_EX, fn)
}

// TryChargePodCopyUp is ChargePodCopyUp for a caller that must not wait:
// while another process holds the pod's record (a copy-up hook copying for
// the same pod), it returns an error wrapping ErrBusy without calling fn.
func (s *Store) TryChargePodCopyUp(podID string, fn func(used int64) (written int64, err error)) error {
	return s.chargePodCopyUp(podID, unix.LOCK_EX|unix.LOCK_NB, fn)
}

// PodCopyUpMaxBytes bounds the bytes of a copy-up for a pod whose copy-ups
// wrote used bytes: maxBytes, the bound of one copy (0: none), or what is
// left of podMaxBytes, the pod's (0: none), whichever is lower; -1, no bytes
// at all, once the pod's are used up. byPod says the pod's is the bound.
func PodCopyUpMaxBytes(maxBytes, podMaxBytes, used int64) (n int64, byPod bool) {
	if podMaxBytes <= 0 {
		return maxBytes, false
	}
	left := podMaxBytes - used
	if maxBytes > 0 && maxBytes <= left {
		return maxBytes, false
	}
	if left <= 0 {
		return -1, true
	}
	return left, true
}

func (s *Store) chargePodCopyUp(podID string, how int, fn func(used int64) (written int64, err error)) error {
	if err := validateID("pod sandbox ID", podID); err != nil {
		return err
	}
	dirFd, err := s.openCopyUpBytesDir()
	if err != nil {
		return fmt.Errorf("copy-up record of pod %q: %w", podID, err)
	}
	defer unix.Close(dirFd)
	fd, err := unix.Openat(dirFd, podID, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("copy-up record of pod %q: %w", podID, &os.PathError{Op: "openat", Path: podID, Err: err})
	}
	defer unix.Close(fd)
	if err := fsx.Flock(fd, how); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			err = fmt.Errorf("%w: another process holds it", ErrBusy)
		}
		return fmt.Errorf("copy-up record of pod %q: %w", podID, err)
	}
	// One 8-byte write at offset 0: a crash leaves the old or the new count.
	var b [8]byte
	n, err := unix.Pread(fd, b[:], 0)
	if err != nil {
		return fmt.Errorf("copy-up record of pod %q: %w", podID, err)
	}
	var used int64
	if n == len(b) {
		used = int64(binary.LittleEndian.Uint64(b[:]))
	}
	written, ferr := fn(used)
	if written <= 0 {
		return ferr
	}
	binary.LittleEndian.PutUint64(b[:], uint64(used+written))
	if _, err := unix.Pwrite(fd, b[:], 0); err != nil {
		return errors.Join(ferr, fmt.Errorf("copy-up record of pod %q: %w", podID, err))
	}
	return ferr
}

// ForgetPodCopyUp removes the copy-up record of pod sandbox podID, once the
// pod is gone.
func (s *Store) ForgetPodCopyUp(podID string) error {
	if err := validateID("pod sandbox ID", podID); err != nil {
		return err
	}
	dirFd, err := s.openCopyUpBytesDir()
	if err != nil {
		return err
	}
	defer unix.Close(dirFd)
	if err := unix.Unlinkat(dirFd, podID, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlinkat", Path: podID, Err: err}
	}
	return nil
}

// ForgetPodCopyUps removes the copy-up records of every pod sandbox that
// keep does not accept: Synchronize forgets the pods that went while the
// plugin was away.
func (s *Store) ForgetPodCopyUps(keep func(podID string) bool) error {
	dirFd, err := s.openCopyUpBytesDir()
	if err != nil {
		return err
	}
	defer unix.Close(dirFd)
	names, err := fsx.ReadDirNames(dirFd)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if keep(n) {
			continue
		}
		if err := unix.Unlinkat(dirFd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, &os.PathError{Op: "unlinkat", Path: n, Err: err})
		}
	}
	return errors.Join(errs...)
}

func (s *Store) openCopyUpBytesDir() (int, error) {
	if err := s.enterOpen("opening the copy-up budgets"); err != nil {
		return -1, err
	}
	defer s.leave()
	return ensureDirAt(s.dirFd, copyUpBytesDir)
}
