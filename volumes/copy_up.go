package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Copy-up records its state in the volume's directory with empty files that
// it creates and renames, so it never needs a temporary file: copyUpStarted
// while a copy runs, renamed to copyUpDone once the data is on disk.
const (
	copyUpStarted = "copyup-started"
	copyUpDone    = "copyup-done"
)

// CopyUp runs copyFn exactly once for a new volume: while holding the lock of
// that volume alone, it checks that the volume's _data is empty and that no
// copy-up finished before, calls copyFn with the path of _data and records the
// completion. Of several callers at once, in one process or several, one
// copies and the others find it done. A volume whose _data already has content
// is left alone. If copyFn fails, _data is emptied again, never left
// half-filled, and the error returned; a copy cut short by a crash is
// redone the same way on the next call.
func (s *Store) CopyUp(ns, name string, copyFn func(dataDir string) error) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	nsFd, err := s.openNamespace(ns)
	if err != nil {
		return publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	volFd, err := openDir(nsFd, name)
	if err != nil {
		return publicError(ns, name, err)
	}
	defer unix.Close(volFd)
	if err := flockRetry(volFd, unix.LOCK_EX); err != nil {
		return volumeError(ns, name, err)
	}
	// Remove renames a volume away under this lock; make sure the directory
	// locked is still the volume.
	held, err := fstat(volFd)
	if err != nil {
		return volumeError(ns, name, err)
	}
	cur, err := lstatAt(nsFd, name)
	if err != nil || cur.Ino != held.Ino || cur.Dev != held.Dev {
		return volumeError(ns, name, ErrNotFound)
	}
	if exists, err := existsAt(volFd, copyUpDone); err != nil || exists {
		return volumeErrorOrNil(ns, name, err)
	}
	interrupted, err := existsAt(volFd, copyUpStarted)
	if err != nil {
		return volumeError(ns, name, err)
	}
	dataFd, err := openDir(volFd, dataDir)
	if err != nil {
		return publicError(ns, name, fmt.Errorf("%w: %w", errBroken, err))
	}
	defer unix.Close(dataFd)
	dst, err := fstat(dataFd)
	if err != nil {
		return volumeError(ns, name, err)
	}
	if interrupted {
		if err := removeContentsAt(dataFd, dst.Dev); err != nil {
			return volumeError(ns, name, fmt.Errorf("emptying an interrupted copy-up: %w", err))
		}
	} else {
		empty, err := isEmptyDir(dataFd)
		if err != nil || !empty {
			return volumeErrorOrNil(ns, name, err)
		}
		if err := createEmptyAt(volFd, copyUpStarted); err != nil {
			return volumeError(ns, name, err)
		}
	}
	if err := copyFn(s.mountpoint(ns, name)); err != nil {
		cause := fmt.Errorf("volume %q in namespace %q: copy-up: %w", name, ns, err)
		if cerr := removeContentsAt(dataFd, dst.Dev); cerr != nil {
			return errors.Join(cause, volumeError(ns, name, fmt.Errorf("emptying after failed copy-up: %w", cerr)))
		}
		if cerr := unix.Unlinkat(volFd, copyUpStarted, 0); cerr != nil {
			return errors.Join(cause, volumeError(ns, name, cerr))
		}
		return cause
	}
	// No sync before the marker, as Docker does none: the markers order the
	// copy against a kill of this process, which is what happens between
	// container starts. syncfs would write back every container's dirty data
	// on the filesystem (30 ms measured under load, unbounded on a busy
	// node) on the path of every container start.
	if err := unix.Renameat(volFd, copyUpStarted, volFd, copyUpDone); err != nil {
		return volumeError(ns, name, err)
	}
	return nil
}

func volumeErrorOrNil(ns, name string, err error) error {
	if err == nil {
		return nil
	}
	return volumeError(ns, name, err)
}

// existsAt reports whether name exists in the directory open at dir.
func existsAt(dir int, name string) (bool, error) {
	_, err := lstatAt(dir, name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// createEmptyAt creates the empty file name in the directory open at dir,
// durably.
func createEmptyAt(dir int, name string) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	unix.Close(fd)
	return unix.Fsync(dir)
}
