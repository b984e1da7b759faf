package volumes

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Making a new volume: its directory built under a temporary name (from a
// spare, an image formatted ahead, or afresh), then named. Creation and
// clones call down into it; it calls nothing of theirs.

// createNewLocked makes v, absent and not a reflink clone, in the namespace
// open at nsFd: from a spare, from an image formatted ahead, or afresh.
// mark, when set, adds to the complete volume's directory, open at its
// argument, before it is named.
func (s *Store) createNewLocked(nsFd int, v *Volume, active, durable bool, mark func(volFd int) error) error {
	ns, name := v.Namespace, v.Name
	var err error
	v.Mountpoint = s.mountpoint(ns, name)
	tmp := tmpPrefix + name + "-" + randomSuffix()
	formatted := false
	if v.Backend == BackendImage && v.Inodes == 0 {
		if formatted, err = s.takeFormatLocked(formatKey{size: v.Limit, active: active}, nsFd, tmp); err != nil {
			return volumeError(ns, name, err)
		}
		if !formatted && s.formatBudget.Load() > 0 {
			return &FormattingError{Namespace: ns, Name: name, Size: v.Limit, Total: 1}
		}
	}
	spare := v.Limit == 0 && s.takeSpareVolumeLocked(nsFd, tmp)
	switch {
	case formatted:
		err = s.fillNew(nsFd, tmp, v, durable, fillFormatted)
	case spare:
		if err = s.fillNew(nsFd, tmp, v, durable, fillSpare); err != nil {
			// A spare this process did not make as it should be: made
			// afresh, the volume needs none.
			removeAllAt(nsFd, tmp, s.dev)
			tmp, spare = tmpPrefix+name+"-"+randomSuffix(), false
		}
	}
	if !spare && !formatted {
		if err := unix.Mkdirat(nsFd, tmp, 0o700); err != nil {
			return volumeError(ns, name, err)
		}
		err = s.fillNew(nsFd, tmp, v, durable, fillEmpty)
	}
	if err == nil && mark != nil {
		var fd int
		if fd, err = fsx.OpenDir(nsFd, tmp); err == nil {
			err = mark(fd)
			unix.Close(fd)
		}
	}
	if err == nil {
		err = s.nameLocked(nsFd, tmp, nsFd, v, durable)
	}
	if err != nil {
		if formatted {
			s.deactivateTmp(nsFd, tmp)
		}
		sizer.DestroySubvolume(nsFd, tmp)
		removeAllAt(nsFd, tmp, s.dev)
		return volumeError(ns, name, err)
	}
	if !durable {
		return nil
	}
	if err := unix.Fsync(nsFd); err != nil {
		return volumeError(ns, name, err)
	}
	return nil
}

// fillKind is what the directory fillNew fills holds already.
type fillKind int

const (
	fillEmpty     fillKind = iota // nothing
	fillSpare                     // a spare (see spares.go): an empty _data and volume.json
	fillFormatted                 // an image formatted ahead (see format.go): _data and disk.img
)

// nameLocked gives the volume v, made complete in fromFd's entry tmp, its
// name in the namespace open at nsFd (fromFd is nsFd but for a clone, staged
// beside its source's snapshots): a sized volume is charged to the ledger first and refunded if the
// rename fails (see ledger.go), and the in-memory counts follow. A name
// taken meanwhile gives ErrExists; tmp is the caller's to remove on error.
func (s *Store) nameLocked(fromFd int, tmp string, nsFd int, v *Volume, durable bool) error {
	if v.Limit > 0 {
		if err := s.chargeLocked(v.Namespace, v.Limit, 1, durable); err != nil {
			return err
		}
	}
	if err := renameNoReplace(fromFd, tmp, nsFd, v.Name); err != nil {
		s.refundLocked(v.Namespace, v.Limit)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			err = ErrExists
		}
		return err
	}
	s.counted(func(c *nsCounts) { c.add(v) })
	return nil
}

// fillNew makes v's content in the directory tmp of the namespace open at
// nsFd, which holds what kind says.
func (s *Store) fillNew(nsFd int, tmp string, v *Volume, durable bool, kind fillKind) error {
	fd, err := fsx.OpenDir(nsFd, tmp)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	switch {
	case kind != fillEmpty:
		// A spare's _data is a bare 0755 directory, as mkdirData makes
		// it; a formatted one's is ready.
	case v.Limit > 0:
		z, err := sizerFor(v.Backend)
		if err != nil {
			return err
		}
		if v.Inodes > 0 {
			z = sizer.Image{Inodes: v.Inodes}
		}
		if err := z.Prepare(fd, v.Limit); err != nil {
			return fmt.Errorf("making a %s volume of %s: %w", v.Backend, FormatBytes(v.Limit), err)
		}
	default:
		if err := sizer.MkdirData(fd); err != nil {
			return err
		}
	}
	// A sized volume on the image backend gets them again on its first
	// activation, on its own file system's root (see activateLocked).
	if err := setRootAttrs(fd, v); err != nil {
		return err
	}
	if v.PersistLater {
		if err := s.markSyncPendingLocked(fd); err != nil {
			return err
		}
	}
	if v.seeding {
		if err := touchAt(fd, importMarker); err != nil {
			return err
		}
	}
	return writeVolume(fd, v, durable, kind == fillSpare)
}
