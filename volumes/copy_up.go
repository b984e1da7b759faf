package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// Copy-up records its state in the volume's directory, where no container
// sees it, with empty files that it creates and renames: copyUpStarted while
// the copy fills the staging directory, copyUpSwitching while the staged
// entries move into _data, copyUpDone at the end. A copy cut short while
// started is thrown away and redone; one cut short while switching is
// finished. So _data is either untouched or complete, but for the moment of
// the moves, which the next start completes. The markers and the staging
// directory are named in layout.go.

// CopyUpStatus is what a container that mounts a volume finds of its
// copy-up, read in one look without a lock; the hook checks again under the
// volume's lock.
type CopyUpStatus struct {
	// Needed: no copy-up finished yet, and either _data is empty or a
	// copy-up was cut short. Such a volume needs the copy-up hook.
	Needed bool
	// CutShort: a copy-up started and did not finish; the hook finishes it
	// or throws it away.
	CutShort bool
	// RootDefault: _data is owned by root:root with mode 0755, what a copy
	// of a bare mount point gives it. Only read when neither of the above
	// is decided by a marker.
	RootDefault bool
}

// Status reads the volume's copy-up state: its markers, and whether
// _data is empty and how it is owned, through one open of the volume.
func (cu CopyUps) Status(ns, name string) (CopyUpStatus, error) {
	s := cu.s
	nsFd, volFd, err := s.openVolume(ns, name)
	if err != nil {
		return CopyUpStatus{}, err
	}
	unix.Close(nsFd)
	defer unix.Close(volFd)
	state, err := copyUpState(volFd)
	if err != nil {
		return CopyUpStatus{}, volumeError(ns, name, err)
	}
	if state != "" {
		cut := state != copyUpDone
		return CopyUpStatus{Needed: cut, CutShort: cut}, nil
	}
	dataFd, err := fsx.OpenDir(volFd, dataDir)
	if err != nil {
		return CopyUpStatus{}, publicError(ns, name, fmt.Errorf("%w: %w", errBroken, err))
	}
	defer unix.Close(dataFd)
	empty, err := fsx.IsEmptyDir(dataFd)
	if err != nil {
		return CopyUpStatus{}, volumeError(ns, name, err)
	}
	st, err := fsx.Fstat(dataFd)
	if err != nil {
		return CopyUpStatus{}, volumeError(ns, name, err)
	}
	return CopyUpStatus{Needed: empty, RootDefault: st.Uid == 0 && st.Gid == 0 && st.Mode&0o7777 == 0o755}, nil
}

// Copy fills a new volume once: while holding the lock of that volume
// alone, it checks that no copy-up finished before and that the volume's
// _data is empty, calls copyFn with an empty staging directory, moves what
// copyFn put there into _data and records the completion. _data takes the
// owner, mode, extended attributes and times the staging directory has at
// the end; it starts with those of _data. Of several callers at once, in one
// process or several, one copies and the others find it done. A volume whose
// _data already has content is left alone.
//
// If copyFn fails, only the staging directory is removed: data that another
// container wrote into a shared volume meanwhile stays. An entry such a
// container made under a name the copy also made is kept, the copy's
// dropped. A copy cut short by a kill or a crash is redone by the next call.
func (cu CopyUps) Copy(ns, name string, copyFn func(dir string) error) error {
	s := cu.s
	volFd, dataFd, err := s.openData(ns, name, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unix.Close(volFd)
	defer unix.Close(dataFd)
	c := &copyUp{s: s, ns: ns, name: name, volFd: volFd, dataFd: dataFd}
	if err := c.run(copyFn); err != nil {
		return volumeError(ns, name, err)
	}
	return nil
}

// MarkEmpty is Copy for an image that has nothing to copy into the
// volume: under the volume's lock, if no copy-up started or finished before
// and _data is empty, it records the copy-up as done, without the staging
// directory and without a sync (a marker lost in a crash costs a hook run).
// With rootDefault, the image has a bare mount point there, whose owner
// root:root and mode 0755 a copy would give _data: then it marks only a
// _data that has them already. It reports whether it marked the volume, and
// copyNeeded when it left the volume to Copy: a copy-up cut short, which
// Copy throws away or finishes, or a _data whose owner or mode differ. A
// volume filled or copied up before is neither.
func (cu CopyUps) MarkEmpty(ns, name string, rootDefault bool) (marked, copyNeeded bool, err error) {
	s := cu.s
	volFd, dataFd, err := s.openData(ns, name, unix.LOCK_EX)
	if err != nil {
		return false, false, err
	}
	defer unix.Close(volFd)
	defer unix.Close(dataFd)
	marked, copyNeeded, err = markEmpty(volFd, dataFd, rootDefault)
	if err != nil {
		return false, false, volumeError(ns, name, err)
	}
	return marked, copyNeeded, nil
}

func markEmpty(volFd, dataFd int, rootDefault bool) (marked, copyNeeded bool, err error) {
	state, err := copyUpState(volFd)
	if err != nil {
		return false, false, err
	}
	if state != "" {
		return false, state != copyUpDone, nil
	}
	if empty, err := fsx.IsEmptyDir(dataFd); err != nil || !empty {
		return false, false, err
	}
	if rootDefault {
		st, err := fsx.Fstat(dataFd)
		if err != nil {
			return false, false, err
		}
		if st.Uid != 0 || st.Gid != 0 || st.Mode&0o7777 != 0o755 {
			return false, true, nil
		}
	}
	if err := touchAt(volFd, copyUpDone); err != nil {
		return false, false, err
	}
	return true, false, nil
}

// copyUp is one CopyUps.Copy call, under the volume's lock.
type copyUp struct {
	s             *Store
	ns, name      string
	volFd, dataFd int
	data          unix.Stat_t
	stageFd       int // the directory that holds copyUpStaging
	stagePath     string
}

func (c *copyUp) run(copyFn func(dir string) error) error {
	state, err := copyUpState(c.volFd)
	if err != nil {
		return err
	}
	if state == copyUpDone {
		return nil
	}
	if c.data, err = fsx.Fstat(c.dataFd); err != nil {
		return err
	}
	vol, err := fsx.Fstat(c.volFd)
	if err != nil {
		return err
	}
	c.stageFd, c.stagePath = c.volFd, filepath.Join(c.s.dir, c.ns, c.name, copyUpStaging)
	if vol.Dev != c.data.Dev {
		c.stageFd, c.stagePath = c.dataFd, filepath.Join(c.s.mountpoint(c.ns, c.name), copyUpStaging)
	}
	switch state {
	case copyUpSwitching:
		return c.finish()
	case "":
		empty, err := fsx.IsEmptyDir(c.dataFd)
		if err != nil || !empty {
			return err
		}
		if err := createEmptyAt(c.volFd, copyUpStarted); err != nil {
			return err
		}
	}
	// Whatever a copy cut short left in staging goes first.
	if err := removeAllAt(c.stageFd, copyUpStaging, c.data.Dev); err != nil {
		return fmt.Errorf("removing an interrupted copy-up: %w", err)
	}
	if err := c.makeStaging(); err != nil {
		return err
	}
	if err := copyFn(c.stagePath); err != nil {
		cause := fmt.Errorf("copy-up: %w", err)
		if cerr := removeAllAt(c.stageFd, copyUpStaging, c.data.Dev); cerr != nil {
			// The marker stays, so the next call removes it.
			return errors.Join(cause, fmt.Errorf("removing the failed copy-up: %w", cerr))
		}
		if cerr := unix.Unlinkat(c.volFd, copyUpStarted, 0); cerr != nil {
			return errors.Join(cause, cerr)
		}
		return cause
	}
	// No sync before the markers, as Docker does none: they order the copy
	// against a kill of this process, which is what happens between
	// container starts. syncfs would write back every container's dirty data
	// on the filesystem (30 ms measured under load, unbounded on a busy
	// node) on the path of every container start.
	if err := unix.Renameat(c.volFd, copyUpStarted, c.volFd, copyUpSwitching); err != nil {
		return err
	}
	return c.finish()
}

// makeStaging makes the empty staging directory with the owner, mode and
// times of _data, so that a copy that has nothing to copy changes none.
func (c *copyUp) makeStaging() error {
	if err := unix.Mkdirat(c.stageFd, copyUpStaging, 0o700); err != nil {
		return &os.PathError{Op: "mkdirat", Path: copyUpStaging, Err: err}
	}
	fd, err := fsx.OpenDir(c.stageFd, copyUpStaging)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fsx.SetOwnerModeTimes(fd, &c.data)
}

// finish moves the staged entries into _data, gives _data the staging
// directory's attributes and records the copy-up as done. It is idempotent:
// after a kill part-way, calling it again completes the move.
func (c *copyUp) finish() error {
	fd, err := fsx.OpenDir(c.stageFd, copyUpStaging)
	if errors.Is(err, fs.ErrNotExist) {
		return unix.Renameat(c.volFd, copyUpSwitching, c.volFd, copyUpDone)
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := c.moveEntries(fd); err != nil {
		return err
	}
	st, err := fsx.Fstat(fd)
	if err != nil {
		return err
	}
	if err := fsx.CopyOwnerModeXattrs(fd, c.dataFd, &st); err != nil {
		return fmt.Errorf("copy-up: attributes of %s: %w", dataDir, err)
	}
	if err := keepChowned(c.volFd, c.dataFd, st.Mode); err != nil {
		return fmt.Errorf("copy-up: %w", err)
	}
	if err := removeAllAt(c.stageFd, copyUpStaging, c.data.Dev); err != nil {
		return err
	}
	// Last, since removing the staging directory from _data changes its times.
	if err := fsx.SetTimes(c.dataFd, &st); err != nil {
		return err
	}
	return unix.Renameat(c.volFd, copyUpSwitching, c.volFd, copyUpDone)
}

// moveEntries renames every entry of the staging directory open at fd into
// _data, never over an existing one: an entry a container of a shared volume
// made meanwhile wins, and the staged one is dropped.
func (c *copyUp) moveEntries(fd int) error {
	rd := fsx.NewDirReader(fd, make([]byte, 8192))
	moved := false
	for {
		name, err := rd.Next()
		if err != nil {
			return err
		}
		if name == "" {
			// Renaming entries away while listing may make the listing
			// miss some; list again until a pass finds none.
			if !moved {
				return nil
			}
			if err := rd.Rewind(); err != nil {
				return err
			}
			moved = false
			continue
		}
		moved = true
		err = renameNoReplace(fd, name, c.dataFd, name)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			err = removeAllAt(fd, name, c.data.Dev)
		}
		if err != nil {
			return &os.PathError{Op: "rename", Path: name, Err: err}
		}
	}
}

// copyUpState returns the copy-up marker in the volume's directory open at
// volFd, or "" when it has none. The markers are renamed one into the next
// under the volume's lock, so a volume has at most one.
func copyUpState(volFd int) (string, error) {
	for _, marker := range []string{copyUpDone, copyUpSwitching, copyUpStarted} {
		exists, err := existsAt(volFd, marker)
		if err != nil || exists {
			return marker, err
		}
	}
	return "", nil
}
