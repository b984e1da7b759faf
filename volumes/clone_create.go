package volumes

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// createCloneLocked makes v, still absent, as a clone of v.cloneOf, under
// the store's exclusive lock, on the path of an NRI request: so only in
// O(1), a reflink of an image volume's disk.img (a store on xfs with
// reflink=1 or on btrfs). A plain source is copied later, outside the
// request, by the copy-up hook (see clone_pending.go). An image without
// reflinks is made as a new sized volume that the copy-up hook fills (see
// clone_sized.go); a source in use with ErrInUse, as
// its image changes under a live file system (a snapshot of it clones). The
// clone takes the source's size, backend, owner and mode, counts against the
// namespace's budget, and is never copied up into.
func (s *Store) createCloneLocked(nsFd int, v *Volume, active, durable bool) error {
	ns, name, src := v.Namespace, v.Name, *v.cloneOf
	fail := func(err error) error { return volumeError(ns, name, fmt.Errorf("cloneOf %q: %w", src, err)) }
	sv, err := s.readVolume(nsFd, ns, src.Volume)
	if err != nil {
		if isAbsent(err) || errors.Is(err, errBroken) {
			err = fmt.Errorf("%w: no volume %q in namespace %q", ErrNotFound, src.Volume, ns)
		}
		return fail(err)
	}
	if sv.Anonymous {
		// An anonymous volume belongs to its container: another pod of
		// the namespace must not read it by its name.
		return fail(fmt.Errorf("%w: no named volume %q in namespace %q", ErrNotFound, src.Volume, ns))
	}
	if sv.Backend == BackendBtrfs {
		return fail(fmt.Errorf("%w: %q is a %s volume, whose clone is a copy, which cannot run while the container is created; "+
			"clone it with \"nri-volumes volume clone\" first, or make the source a sized volume on the image backend", ErrInvalid, src.Volume, backendName(sv.Backend)))
	}
	if sv.Backend == BackendImage {
		if err := s.checkBudgetLocked(ns, sv.Limit); err != nil {
			return err
		}
	}
	srcVol, err := fsx.OpenDir(nsFd, src.Volume)
	if err != nil {
		return fail(publicError(ns, src.Volume, err))
	}
	defer unix.Close(srcVol)
	// Never waited for here: a snapshot, copy-up or import of the source
	// holds it exclusively for as long as it takes.
	if err := unix.Flock(srcVol, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			err = fmt.Errorf("%w: a snapshot, clone, copy-up or import of %q is running; try again", ErrBusy, src.Volume)
		}
		return fail(err)
	}
	if sv.Backend == BackendNone {
		return s.createPendingCloneLocked(nsFd, srcVol, v, sv, durable)
	}
	if !s.canReflink() {
		return s.createPendingSizedCloneLocked(nsFd, srcVol, v, sv, active, durable)
	}
	imgDir, err := cloneSourceDir(srcVol, src)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(imgDir)
	v.Limit, v.Backend, v.Inodes = sv.Limit, sv.Backend, sv.Inodes
	v.UID, v.GID, v.Mode = sv.UID, sv.GID, sv.Mode
	v.Mountpoint = s.mountpoint(ns, name)
	tmp := tmpPrefix + name + "-" + randomSuffix()
	if err := unix.Mkdirat(nsFd, tmp, 0o700); err != nil {
		return volumeError(ns, name, err)
	}
	err = s.fillClone(nsFd, tmp, imgDir, v, durable)
	if err == nil {
		err = s.nameLocked(nsFd, tmp, nsFd, v, durable)
	}
	if err != nil {
		removeAllAt(nsFd, tmp, s.dev)
		if errors.Is(err, snapfs.ErrNoReflink) {
			return fail(fmt.Errorf("%w: the store's file system cannot clone in O(1) (reflinks: xfs made with reflink=1, or btrfs), "+
				"and a copy cannot run while the container is created; clone it with \"nri-volumes volume clone\" first", ErrInvalid))
		}
		return fail(err)
	}
	recordClone(s.copyUps, snapfs.Reflink)
	if durable {
		return unix.Fsync(nsFd)
	}
	return nil
}

func backendName(b Backend) string {
	if b == BackendNone {
		return "plain directory"
	}
	return string(b)
}

// fillClone makes the clone's directory tmp: _data, the reflinked
// disk.img, the copy-up marker and volume.json.
func (s *Store) fillClone(nsFd int, tmp string, imgDir int, v *Volume, durable bool) error {
	fd, err := fsx.OpenDir(nsFd, tmp)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := sizer.MkdirData(fd); err != nil {
		return err
	}
	src, err := unix.Openat(imgDir, imageFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: imageFile, Err: err}
	}
	defer unix.Close(src)
	dst, err := createImage(fd)
	if err != nil {
		return err
	}
	err = snapfs.ReflinkFile(dst, src)
	if err == nil && durable {
		err = unix.Fsync(dst)
	}
	unix.Close(dst)
	if err != nil {
		return err
	}
	if err := touchAt(fd, copyUpDone); err != nil {
		return err
	}
	if v.PersistLater {
		if err := s.markSyncPendingLocked(fd); err != nil {
			return err
		}
	}
	return writeVolume(fd, v, durable, false)
}
