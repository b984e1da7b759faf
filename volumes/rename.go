package volumes

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Rename gives volume old of namespace ns the name new, with its data,
// snapshots and labels. A volume in use is refused with ErrInUse naming the
// containers, and so is one that a snapshot, clone, copy-up or import holds;
// an anonymous volume, whose name is its owner's, with ErrInvalid; a name
// taken with ErrExists.
func (s *Store) Rename(ns, old, new string) (*Volume, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateName(old); err != nil {
		return nil, err
	}
	if err := ValidateNamedVolume(new); err != nil {
		return nil, err
	}
	var v *Volume
	err := s.withLock(unix.LOCK_EX, func() error {
		nsFd, err := fsx.OpenDir(s.dirFd, ns)
		if err != nil {
			return publicError(ns, old, err)
		}
		defer unix.Close(nsFd)
		if v, err = s.readVolume(nsFd, ns, old); err != nil {
			return publicError(ns, old, err)
		}
		if v.Anonymous {
			return volumeError(ns, old, fmt.Errorf("%w: an anonymous volume belongs to its container and cannot be renamed", ErrInvalid))
		}
		if len(v.UsedBy) > 0 {
			return &OpError{Op: "rename", Namespace: ns, Name: old, Refs: v.UsedBy, Err: ErrInUse}
		}
		if exists, err := existsAt(nsFd, new); err != nil || exists {
			if err == nil {
				err = ErrExists
			}
			return volumeError(ns, new, err)
		}
		volFd, err := fsx.OpenDir(nsFd, old)
		if err != nil {
			return publicError(ns, old, err)
		}
		defer unix.Close(volFd)
		if err := unix.Flock(volFd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			if errors.Is(err, unix.EWOULDBLOCK) {
				err = fmt.Errorf("%w: a snapshot, clone, copy-up or import of it is running", ErrInUse)
			}
			return volumeError(ns, old, err)
		}
		if err := s.quiesceLocked(v, volFd); err != nil {
			return volumeError(ns, old, err)
		}
		if err := renameNoReplace(nsFd, old, nsFd, new); err != nil {
			if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
				return volumeError(ns, new, ErrExists)
			}
			return volumeError(ns, old, err)
		}
		v.Name, v.Mountpoint = new, s.mountpoint(ns, new)
		s.counted(func(c *nsCounts) { c.drop(ns, old); c.add(v) })
		// The directory's name is the volume's; volume.json follows it.
		if err := errors.Join(patchVolumeJSON(volFd, "Name", new), unix.Fsync(nsFd)); err != nil {
			return volumeError(ns, new, err)
		}
		return s.bump(true)
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// quiesceLocked takes a sized volume that no container uses down from its
// _data, as something left it up, and waits for its loop device to go: the
// device names the image by its path, which is about to change.
func (s *Store) quiesceLocked(v *Volume, volFd int) error {
	if v.Limit == 0 || !sizer.IsDataMounted(volFd) {
		return nil
	}
	if err := s.deactivateLocked(v); err != nil {
		return err
	}
	if v.Backend != BackendImage {
		return nil
	}
	return waitLoopGone(volFd)
}

// UpdateLabels adds the labels add to volume name of namespace ns, replacing
// the value of a key it has, and removes the keys rm, in use or not. A key
// in both is refused with ErrInvalid. It holds the volume's own lock, as
// ChownRoot does for the other change of volume.json, and waits for a
// snapshot, clone, copy-up or import of the volume to end. It returns the
// volume as updated.
func (s *Store) UpdateLabels(ns, name string, add map[string]string, rm []string) (*Volume, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	for _, k := range rm {
		if _, ok := add[k]; ok {
			return nil, volumeError(ns, name, fmt.Errorf("%w: label %q is both added and removed", ErrInvalid, k))
		}
	}
	volFd, err := s.lockVolume(ns, name, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unix.Close(volFd)
	var v *Volume
	err = s.withLock(unix.LOCK_EX, func() error {
		var err error
		if v, err = s.loadVolumeAt(volFd, ns, name); err != nil {
			return publicError(ns, name, err)
		}
		v.UsedBy = s.idx.usedBy(v.key())
		labels := maps.Clone(v.Labels)
		maps.Copy(labels, add)
		for _, k := range rm {
			delete(labels, k)
		}
		if maps.Equal(labels, v.Labels) {
			return nil
		}
		v.Labels = labels
		if err := patchVolumeJSON(volFd, "Labels", labels); err != nil {
			return volumeError(ns, name, err)
		}
		return s.bump(true)
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// patchVolumeJSON sets one field of the volume.json of the volume directory
// open at volFd, atomically and durably, keeping every other field as it
// is, those of a newer version too.
func patchVolumeJSON(volFd int, field string, value any) error {
	raw, err := fsx.ReadFile(volFd, metaFile, maxMetaSize)
	if err != nil {
		return fmt.Errorf("%w: no readable %s: %w", errBroken, metaFile, err)
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("%w: bad %s: %w", errBroken, metaFile, err)
	}
	if rec[field], err = json.Marshal(value); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return replaceFileAt(volFd, metaFile, append(data, '\n'), true)
}
