package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Clones and restores. A clone is a new, independent, writable volume made
// from a snapshot of another volume, or from the volume as it is now (frozen
// for the moment of the copy, as a snapshot is); a restore puts a snapshot's
// data back into its volume. Both build the new data under a temporary name
// in the source volume's snapshots directory, holding that volume's flock,
// outside the store's lock; only the final rename and the checks it needs
// (the new name free, the volume not in use) happen under the store's lock.

// CloneOptions are the properties of a clone.
type CloneOptions struct {
	// Labels label the new volume.
	Labels map[string]string
	// Size grows a clone of a sized volume to this many bytes; 0 keeps the
	// source's size. A smaller size is refused.
	Size int64
	// Live allows a clone of a plain directory volume in use, not
	// crash-consistent; see SnapshotOptions.
	Live bool
}

// CloneResult is what Clone made, and how.
type CloneResult struct {
	Volume *Volume
	// Copy says how the data was copied: "reflink" (O(1)) or "copy".
	Copy snapfs.Method
	// Live says a plain volume was copied while containers used it: the
	// clone is not crash-consistent.
	Live bool
}

// Clone makes the named volume dst of namespace ns as a copy of snapshot
// snap of volume src, or of src as it is now when snap is empty. It fails
// with ErrExists if dst exists, ErrNotFound for a missing source or
// snapshot, ErrInvalid for a size below the source's or a size asked of a
// clone of a plain volume, ErrInUse for a plain source in use without Live,
// ErrLimit over the namespace's budget. Nothing is left behind on failure.
func (s *Store) Clone(ns, src, snap, dst string, opts CloneOptions) (*CloneResult, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateName(src); err != nil {
		return nil, err
	}
	if err := ValidateNamedVolume(dst); err != nil {
		return nil, err
	}
	if _, err := s.Get(ns, dst); err == nil {
		return nil, volumeError(ns, dst, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	v, err := s.Get(ns, src)
	if err != nil {
		return nil, err
	}
	switch {
	case opts.Size < 0:
		return nil, volumeError(ns, dst, fmt.Errorf("%w: negative size %d", ErrInvalid, opts.Size))
	case opts.Size > 0 && v.Limit == 0:
		return nil, volumeError(ns, dst, fmt.Errorf("%w: a clone of %q, a volume without a size, cannot be given one", ErrInvalid, src))
	case opts.Size > 0 && opts.Size < v.Limit:
		return nil, volumeError(ns, dst, fmt.Errorf("%w: size %s is below the %s of %q; sizes only grow",
			ErrInvalid, FormatBytes(opts.Size), FormatBytes(v.Limit), src))
	}
	st, err := s.stageClone(v, snap, opts.Live)
	if err != nil {
		return nil, err
	}
	defer st.close()
	nv := newVolume(ns, dst, CreateOptions{Labels: opts.Labels}, nil)
	nv.UID, nv.GID, nv.Mode = v.UID, v.GID, v.Mode
	nv.Limit, nv.Backend, nv.Inodes = v.Limit, v.Backend, v.Inodes
	nv.Mountpoint = s.mountpoint(ns, dst)
	if opts.Size > v.Limit {
		if err := (sizer.Image{}).Grow(st.fd, "", opts.Size); err != nil {
			return nil, volumeError(ns, dst, fmt.Errorf("growing the clone to %s: %w", FormatBytes(opts.Size), err))
		}
		nv.Limit = opts.Size
	}
	if err := s.placeClone(st, nv); err != nil {
		return nil, err
	}
	recordClone(s.copyUps, st.copy)
	return &CloneResult{Volume: nv, Copy: st.copy, Live: st.live}, nil
}

// staged is new volume data built under a temporary name in the snapshots
// directory of a volume whose flock is held.
type staged struct {
	volFd, snapsFd int
	name           string
	fd             int // the staged directory
	copy           snapfs.Method
	live           bool // copied from a plain volume in use
	// dataFd is the held live volume's _data (-1 for a snapshot): the
	// copy reads it, never a second open of the path, which another
	// process's settle may have unmounted meanwhile (a freeze through it
	// would then freeze the store's own file system).
	dataFd  int
	release func()
}

// close removes what is still staged and lets the volume go.
func (st *staged) close() {
	if st.fd >= 0 {
		unix.Close(st.fd)
	}
	if st.name != "" {
		_ = removeAllAt(st.snapsFd, st.name, statDev(st.snapsFd))
	}
	unix.Close(st.snapsFd)
	st.release()
}

func statDev(fd int) uint64 {
	st, _ := fsx.Fstat(fd)
	return st.Dev
}

// stageClone builds the data of a clone of snapshot snap of v, or of v as it
// is now, in a staged directory holding _data (and disk.img for the image
// backend) and the copy-up marker: a clone is never copied up into.
func (s *Store) stageClone(v *Volume, snap string, live bool) (*staged, error) {
	ns, name := v.Namespace, v.Name
	var st *staged
	var srcDir int
	if snap == "" {
		h, err := s.holdVolume(ns, name, unix.LOCK_EX)
		if err != nil {
			return nil, err
		}
		var taken bool
		if err := s.checkCopyable(h.v, live, "a clone", &taken); err != nil {
			h.release()
			return nil, err
		}
		snapsFd, err := openSnapshots(h.volFd)
		if err != nil {
			h.release()
			return nil, volumeError(ns, name, err)
		}
		st = &staged{volFd: h.volFd, snapsFd: snapsFd, fd: -1, live: taken, dataFd: h.dataFd, release: h.release}
	} else {
		sn, volFd, snapsFd, err := s.openSnapshot(ns, name, snap, unix.LOCK_EX)
		if err != nil {
			return nil, err
		}
		if sn.Backend != v.Backend {
			unix.Close(snapsFd)
			unix.Close(volFd)
			return nil, snapshotError(ns, name, snap, fmt.Errorf("%w: taken of a %q volume, the volume is %q now", errBroken, sn.Backend, v.Backend))
		}
		if srcDir, err = fsx.OpenDir(snapsFd, snap); err != nil {
			unix.Close(snapsFd)
			unix.Close(volFd)
			return nil, snapshotError(ns, name, snap, err)
		}
		defer unix.Close(srcDir)
		st = &staged{volFd: volFd, snapsFd: snapsFd, fd: -1, dataFd: -1, release: func() { unix.Close(volFd) }}
	}
	if err := st.fill(s, v, snap, srcDir); err != nil {
		st.close()
		if snap != "" {
			return nil, snapshotError(ns, name, snap, err)
		}
		return nil, volumeError(ns, name, err)
	}
	return st, nil
}

// fill makes the staged directory and copies into it the snapshot open at
// srcDir, or, with snap empty, the live volume (whose holder is st).
func (st *staged) fill(s *Store, v *Volume, snap string, srcDir int) error {
	name := tmpPrefix + "clone-" + randomSuffix()
	if err := unix.Mkdirat(st.snapsFd, name, 0o700); err != nil {
		return &os.PathError{Op: "mkdirat", Path: name, Err: err}
	}
	st.name = name
	fd, err := fsx.OpenDir(st.snapsFd, name)
	if err != nil {
		return err
	}
	st.fd = fd
	path := filepath.Join(s.dir, v.Namespace, v.Name, snapshotsDir, name)
	switch {
	case v.Limit > 0 && snap == "":
		if err := sizer.MkdirData(fd); err != nil {
			return err
		}
		h := &heldVolume{v: v, volFd: st.volFd, dataFd: st.dataFd}
		st.copy, _, err = s.cloneLiveImage(h, fd)
	case v.Limit > 0:
		if err := sizer.MkdirData(fd); err != nil {
			return err
		}
		st.copy, err = cloneImageAt(srcDir, fd)
	case snap == "":
		st.copy, _, err = copyTree(st.dataFd, fd, path)
	default:
		var data int
		if data, err = fsx.OpenDir(srcDir, dataDir); err != nil {
			return err
		}
		defer unix.Close(data)
		st.copy, _, err = copyTree(data, fd, path)
	}
	if err != nil {
		return err
	}
	return createEmptyAt(fd, copyUpDone)
}

// placeClone gives the staged data the volume.json of nv and renames it into
// place under the store's lock, if nv's name is free and its size within
// the namespace's budget.
func (s *Store) placeClone(st *staged, nv *Volume) error {
	ns, name := nv.Namespace, nv.Name
	if err := writeVolume(st.fd, nv, true, false); err != nil {
		return volumeError(ns, name, err)
	}
	return s.withLock(unix.LOCK_EX, func() error {
		nsFd, err := fsx.OpenDir(s.dirFd, ns)
		if err != nil {
			return publicError(ns, name, err)
		}
		defer unix.Close(nsFd)
		if exists, err := existsAt(nsFd, name); err != nil || exists {
			if err == nil {
				err = ErrExists
			}
			return volumeError(ns, name, err)
		}
		if err := s.checkBudgetLocked(ns, nv.Limit); err != nil {
			return err
		}
		if err := s.nameLocked(st.snapsFd, st.name, nsFd, nv, true); err != nil {
			return volumeError(ns, name, err)
		}
		st.name = ""
		if err := errors.Join(unix.Fsync(nsFd), unix.Fsync(st.snapsFd)); err != nil {
			return volumeError(ns, name, err)
		}
		return s.bump(true)
	})
}

// waitLoopGone waits, briefly, for the loop device that held the disk.img of
// the volume directory open at volFd to detach after its unmount: a new
// disk.img renamed over it while it lingers would have the next activation
// take the old device, and the old data.
func waitLoopGone(volFd int) error {
	img, err := sizer.OpenImage(volFd)
	if err != nil {
		return err
	}
	defer img.Close()
	for end := time.Now().Add(2 * time.Second); ; {
		if _, bound := sizer.BoundLoop(img); !bound {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("%w: its loop device is still detaching; try again", ErrInUse)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
