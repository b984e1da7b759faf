// Package podbudget keeps, for each pod sandbox, the bytes that the
// copy-ups of its containers wrote, which limits.copyUpMaxSizePerPod
// bounds. The records are files in a directory that the volume store opens
// and hands over: one per pod, named by its ID, holding one 8-byte count.
// A copy-up holds its pod's record with an flock while it copies, so the
// copy-ups of one pod, in any process, take turns. The package validates no
// pod ID: the store does, before it hands the directory over.
package podbudget

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// ErrHeld is what Charge returns, without calling fn, when it must not wait
// and another process holds the pod's record.
var ErrHeld = errors.New("another process holds the record")

// Charge runs fn with the bytes that copy-ups for pod sandbox podID wrote so
// far, by the record in the directory open at dirFd, and adds the bytes fn
// reports it wrote, even when fn fails part-way. It holds the record's flock
// throughout; without wait, a record that another process holds is ErrHeld.
func Charge(dirFd int, podID string, wait bool, fn func(used int64) (written int64, err error)) error {
	fd, err := unix.Openat(dirFd, podID, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("copy-up record of pod %q: %w", podID, &os.PathError{Op: "openat", Path: podID, Err: err})
	}
	defer unix.Close(fd)
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := fsx.Flock(fd, how); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return ErrHeld
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

// Forget removes the record of pod sandbox podID from the directory open at
// dirFd, once the pod is gone; a pod without one is no error.
func Forget(dirFd int, podID string) error {
	if err := unix.Unlinkat(dirFd, podID, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlinkat", Path: podID, Err: err}
	}
	return nil
}

// ForgetAllBut removes the records, in the directory open at dirFd, of every
// pod sandbox that keep does not accept.
func ForgetAllBut(dirFd int, keep func(podID string) bool) error {
	names, err := fsx.ReadDirNames(dirFd)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if !keep(n) {
			errs = append(errs, Forget(dirFd, n))
		}
	}
	return errors.Join(errs...)
}
