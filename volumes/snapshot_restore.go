// Restoring a snapshot: its data, staged as a clone (see clone.go), takes
// the place of the volume's while no container uses it.

package volumes

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Restore puts the data of snapshot snap of volume name in namespace ns back
// into the volume, replacing what it holds. A volume that a container uses
// is refused with ErrInUse naming the containers, as Import is. A volume
// grown since the snapshot keeps its size. The old data is deleted; the
// snapshot stays.
func (ss Snapshots) Restore(ns, name, snap string) error {
	s := ss.s
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	v, err := s.Get(ns, name)
	if err != nil {
		return err
	}
	if err := s.refuseInUse(v); err != nil {
		return err
	}
	st, err := s.stageClone(v, snap, false)
	if err != nil {
		return err
	}
	defer st.close()
	if v.Limit > 0 {
		// The volume may have grown since; it keeps its size.
		if err := (sizer.Image{}).Grow(st.fd, "", v.Limit); err != nil {
			return snapshotError(ns, name, snap, fmt.Errorf("growing it to the volume's %s: %w", FormatBytes(v.Limit), err))
		}
	}
	return s.withLock(unix.LOCK_EX, func() error {
		if err := s.refuseInUseLocked(v); err != nil {
			return err
		}
		if err := s.swapInLocked(v, st); err != nil {
			return snapshotError(ns, name, snap, err)
		}
		return s.bump(true)
	})
}

// refuseInUse fails with ErrInUse, naming the containers, when a container
// uses v.
func (s *Store) refuseInUse(v *Volume) error {
	return s.withLock(unix.LOCK_SH, func() error { return s.refuseInUseLocked(v) })
}

func (s *Store) refuseInUseLocked(v *Volume) error {
	if users := s.idx.usedBy(v.key()); len(users) > 0 {
		return &OpError{Op: "restore", Namespace: v.Namespace, Name: v.Name, Refs: users, Err: ErrInUse}
	}
	return nil
}

// swapInLocked replaces the data of the unused volume v with the staged
// data: a new disk.img for the image backend, with the volume's file system
// taken down first; the _data tree of a plain volume, exchanged atomically.
// The old data is left in the staged directory, which st.close deletes.
func (s *Store) swapInLocked(v *Volume, st *staged) error {
	if v.Limit == 0 {
		if err := unix.Renameat2(st.fd, dataDir, st.volFd, dataDir, unix.RENAME_EXCHANGE); err != nil {
			return &os.PathError{Op: "renameat2", Path: dataDir, Err: err}
		}
		return errors.Join(s.markRestored(st.volFd), unix.Fsync(st.volFd))
	}
	if err := s.deactivateLocked(v); err != nil {
		return err
	}
	if err := waitLoopGone(st.volFd); err != nil {
		return err
	}
	if err := unix.Renameat(st.fd, imageFile, st.volFd, imageFile); err != nil {
		return &os.PathError{Op: "renameat", Path: imageFile, Err: err}
	}
	return errors.Join(s.markRestored(st.volFd), unix.Fsync(st.volFd))
}

// markRestored records the copy-up of the volume open at volFd as done: its
// data is the snapshot's, never to be copied up into.
func (s *Store) markRestored(volFd int) error {
	if state, err := copyUpState(volFd); err != nil || state == copyUpDone {
		return err
	}
	return touchAt(volFd, copyUpDone)
}
