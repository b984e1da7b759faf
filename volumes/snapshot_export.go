package volumes

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Reading a volume in use at one instant. Export (and so push, which
// exports) of a sized volume that containers use reads a temporary
// snapshot instead of the live tree: the image is cloned under a freeze as
// Snapshots.Create clones it, into a temporary entry of the volume's
// snapshots directory, and the clone is mounted on a loop device of its
// own at mnt in that entry. The mount is read-write on purpose: the clone
// is what a crash would have left, and mounting replays its journal, which
// a read-only device could not. The volume's flock is held exclusively
// until the export ends, so no other operation removes the entry beneath
// it; a process that dies meanwhile leaves it to the next operation that
// takes the flock (see openSnapshots).

// CanSnapshot reports whether the store can take a crash-consistent
// snapshot of v while containers write to it: a sized volume of the image
// backend, whose file system can be frozen.
func (v *Volume) CanSnapshot() bool {
	return v.Backend == BackendImage && v.Limit > 0
}

// exportSource opens the directory Export reads for volume name of
// namespace ns: a temporary snapshot when containers use a volume that can
// have one, else the volume's _data under its shared flock. release undoes
// it all.
func (s *Store) exportSource(ns, name string) (dataFd int, release func(), snap bool, err error) {
	v, err := s.Get(ns, name)
	if err != nil {
		return -1, nil, false, err
	}
	if !v.CanSnapshot() || len(v.UsedBy) == 0 {
		_, dataFd, release, err := s.openArchiveData(ns, name, unix.LOCK_SH)
		return dataFd, release, false, err
	}
	dataFd, release, err = s.openTempSnapshot(ns, name)
	return dataFd, release, true, err
}

// openTempSnapshot takes a temporary snapshot of image volume name of
// namespace ns and mounts it; release unmounts and removes it, refunds its
// charge and lets the volume's flock go.
func (s *Store) openTempSnapshot(ns, name string) (int, func(), error) {
	h, err := s.holdVolume(ns, name, unix.LOCK_EX)
	if err != nil {
		return -1, nil, err
	}
	tmp := tmpPrefix + "export-" + randomSuffix()
	est, err := s.snapshotEstimate(h)
	if err == nil {
		err = s.chargeSnapshot(h, "(a temporary one, to export from)", est)
	}
	if err != nil {
		h.release()
		return -1, nil, err
	}
	snapsFd, err := openSnapshots(h.volFd)
	if err != nil {
		s.settleSnapshot(ns, est, 0, 0)
		h.release()
		return -1, nil, volumeError(ns, name, err)
	}
	dataFd, unmount, err := s.mountTempSnapshot(h, snapsFd, tmp)
	// The volume's own file system is no longer needed; its flock is.
	unix.Close(h.dataFd)
	h.done()
	cleanup := func() {
		_ = removeAllAt(snapsFd, tmp, s.dev)
		unix.Close(snapsFd)
		s.settleSnapshot(ns, est, 0, 0)
		unix.Close(h.volFd)
	}
	if err != nil {
		cleanup()
		return -1, nil, snapshotError(ns, name, tmp, err)
	}
	return dataFd, func() {
		unix.Close(dataFd)
		unmount()
		cleanup()
	}, nil
}

// mountTempSnapshot clones the held volume's image into the new directory
// tmp of the snapshots directory open at snapsFd and mounts the clone at
// its mnt, returning the mount's root, open, and how to unmount it.
func (s *Store) mountTempSnapshot(h *heldVolume, snapsFd int, tmp string) (int, func(), error) {
	if err := unix.Mkdirat(snapsFd, tmp, 0o700); err != nil {
		return -1, nil, &os.PathError{Op: "mkdirat", Path: tmp, Err: err}
	}
	dir, err := fsx.OpenDir(snapsFd, tmp)
	if err != nil {
		return -1, nil, err
	}
	defer unix.Close(dir)
	if _, _, err := s.cloneLiveImage(h, dir); err != nil {
		return -1, nil, err
	}
	if err := unix.Mkdirat(dir, exportMount, 0o700); err != nil {
		return -1, nil, &os.PathError{Op: "mkdirat", Path: exportMount, Err: err}
	}
	target := fsx.ProcPath(dir) + "/" + exportMount
	if err := sizer.MountImage(dir, target); err != nil {
		return -1, nil, err
	}
	mnt, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		sizer.Detach(target)
		return -1, nil, &os.PathError{Op: "open", Path: exportMount, Err: err}
	}
	// The path through snapsFd stays valid after dir is closed.
	path := fsx.ProcPath(snapsFd) + "/" + tmp + "/" + exportMount
	return mnt, func() { sizer.Unmount(path) }, nil
}
