package volumes

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/podbudget"
)

// Charge runs fn with the bytes that copy-ups for pod sandbox podID
// wrote so far, and adds the bytes fn reports it wrote. It holds a lock on
// the pod's record throughout, so the copy-ups of one pod's containers take
// turns and together stay within the budget fn enforces. fn reports what it
// wrote even when it fails part-way.
func (b PodBudgets) Charge(podID string, fn func(used int64) (written int64, err error)) error {
	return b.s.chargePodCopyUp(podID, true, fn)
}

// TryCharge is Charge for a caller that must not wait:
// while another process holds the pod's record (a copy-up hook copying for
// the same pod), it returns an error wrapping ErrBusy without calling fn.
func (b PodBudgets) TryCharge(podID string, fn func(used int64) (written int64, err error)) error {
	return b.s.chargePodCopyUp(podID, false, fn)
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

func (s *Store) chargePodCopyUp(podID string, wait bool, fn func(used int64) (written int64, err error)) error {
	if err := validateID("pod sandbox ID", podID); err != nil {
		return err
	}
	dirFd, err := s.openCopyUpBytesDir(podID)
	if err != nil {
		return fmt.Errorf("copy-up record of pod %q: %w", podID, err)
	}
	defer unix.Close(dirFd)
	err = podbudget.Charge(dirFd, podID, wait, fn)
	if errors.Is(err, podbudget.ErrHeld) {
		return fmt.Errorf("copy-up record of pod %q: %w: another process holds it", podID, ErrBusy)
	}
	return err
}

// Forget removes the copy-up record of pod sandbox podID, once the
// pod is gone.
func (b PodBudgets) Forget(podID string) error {
	s := b.s
	if err := validateID("pod sandbox ID", podID); err != nil {
		return err
	}
	dirFd, err := s.openCopyUpBytesDir("")
	if err != nil {
		return err
	}
	defer unix.Close(dirFd)
	return podbudget.Forget(dirFd, podID)
}

// ForgetAllBut removes the copy-up records of every pod sandbox that
// keep does not accept: Synchronize forgets the pods that went while the
// plugin was away.
func (b PodBudgets) ForgetAllBut(keep func(podID string) bool) error {
	s := b.s
	dirFd, err := s.openCopyUpBytesDir("")
	if err != nil {
		return err
	}
	defer unix.Close(dirFd)
	return podbudget.ForgetAllBut(dirFd, keep)
}

// Prepare makes the copy-up record of pod sandbox podID, unless it
// has one, from a file spare (see Spares): the copy-up hook of a new
// pod's first container then opens a record instead of making an inode on
// the container's start path, which costs 0.1 to 1 ms of kernel time on a
// slow disk (issue 19). Without a spare it leaves the record to the hook.
func (b PodBudgets) Prepare(podID string) error {
	s := b.s
	if err := validateID("pod sandbox ID", podID); err != nil {
		return err
	}
	fd, err := s.openCopyUpBytesDir(podID)
	if err != nil {
		return fmt.Errorf("copy-up record of pod %q: %w", podID, err)
	}
	return unix.Close(fd)
}

// openCopyUpBytesDir opens the directory of the copy-up records, and, for
// a podID, first puts a file spare there as the pod's record if it has none
// and the pool has one: a process without spares (the hook) makes the
// record with its open.
func (s *Store) openCopyUpBytesDir(podID string) (int, error) {
	if err := s.enterOpen("opening the copy-up budgets"); err != nil {
		return -1, err
	}
	defer s.leave()
	fd, err := ensureDirAt(s.dirFd, copyUpBytesDir)
	if err != nil || podID == "" {
		return fd, err
	}
	if err := s.placePodRecordLocked(fd, podID); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// placePodRecordLocked renames a file spare to podID's record in the
// directory open at dirFd, unless there is a record or no spare. The
// caller holds the in-process lock.
func (s *Store) placePodRecordLocked(dirFd int, podID string) error {
	if _, err := fsx.Lstat(dirFd, podID); !errors.Is(err, unix.ENOENT) {
		return err // a record already (nil), or what the open would hit
	}
	spare, ok := s.takeSpareFileLocked()
	if !ok {
		return nil
	}
	err := renameNoReplace(s.spare.fd, spare, dirFd, podID)
	if err == nil {
		return nil
	}
	unix.Unlinkat(s.spare.fd, spare, 0)
	if errors.Is(err, unix.EEXIST) {
		return nil // another process made it meanwhile
	}
	return &os.PathError{Op: "renameat2", Path: podID, Err: err}
}
