package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Clones of sized volumes on a store without reflinks (ext4 on the host).
// The image cannot be cloned in O(1), and a copy of it cannot run inside an
// NRI request. So the request makes the clone as any new sized volume of
// the source's size is made (from an image formatted ahead, see format.go,
// so no mkfs runs under the lock), marked clonePending as a clone of a
// plain volume is (see clone_pending.go), and the copy-up hook copies the
// source's tree into it through CopyUps.FillClone: staged, all or nothing,
// within the copy-up limits and charged to the pod's copy-up budget.
//
// The source's tree is read from its image mounted on a loop device of its
// own at a temporary entry of the source's snapshots directory: the
// snapshot's image, or the volume's own while no file system of it is up.
// The mount is read-only, on a read-only loop device, so the snapshot (and
// the bytes the ledger counts for it) stays as it is: unlike an export's
// temporary snapshot (snapshot_export.go), which is cloned from a live file
// system, a snapshot's image was taken frozen, which flushes the journal,
// and a volume's image at rest was unmounted cleanly, so neither needs a
// journal replay. The copy holds the source volume's flock exclusively,
// as openSnapshots needs to clear a dead process's temporary entries, and
// no snapshot removal or restore changes the source meanwhile.

// canReflink reports whether files of the store can be cloned in O(1)
// (FICLONE), probed once on two unnamed files of the store's directory.
// The probe is O(1) itself: it may run inside a request.
func (s *Store) canReflink() bool {
	s.reflinks.once.Do(func() { s.reflinks.ok = snapfs.ProbeReflink(s.dirFd) })
	return s.reflinks.ok
}

// createPendingSizedCloneLocked makes v, still absent, under the store's
// exclusive lock, as a new sized volume of the size of sv, the image
// volume it clones, whose directory is open at srcVol: empty and marked
// clonePending, to be filled by the copy-up hook. The source must be there
// now: its snapshot, or the volume itself at rest.
func (s *Store) createPendingSizedCloneLocked(nsFd, srcVol int, v, sv *Volume, active, durable bool) error {
	ns, name, src := v.Namespace, v.Name, *v.cloneOf
	fail := func(err error) error { return volumeError(ns, name, fmt.Errorf("cloneOf %q: %w", src, err)) }
	imgDir, err := cloneSourceDir(srcVol, src)
	if err != nil {
		return fail(err)
	}
	unix.Close(imgDir)
	v.Limit, v.Backend, v.Inodes = sv.Limit, sv.Backend, sv.Inodes
	v.UID, v.GID, v.Mode = sv.UID, sv.GID, sv.Mode
	err = s.createNewLocked(nsFd, v, active, durable, func(fd int) error {
		return createFileAt(fd, clonePending, []byte(src.String()), durable)
	})
	if err != nil {
		var fe *FormattingError
		if errors.As(err, &fe) {
			return err
		}
		return fail(err)
	}
	v.ClonePending = src.String()
	return nil
}

// cloneFormatSize is the size of the image a request must have formatted
// ahead for a clone of src in namespace ns: the source's size when it is
// a sized image volume and the store has no reflinks, else 0. The caller
// holds the store's lock.
func (s *Store) cloneFormatSize(ns string, src CloneSource) int64 {
	if s.canReflink() {
		return 0
	}
	nsFd, err := fsx.OpenDir(s.dirFd, ns)
	if err != nil {
		return 0
	}
	defer unix.Close(nsFd)
	sv, err := s.readVolume(nsFd, ns, src.Volume)
	if err != nil || sv.Backend != BackendImage || sv.Inodes > 0 {
		return 0
	}
	return sv.Limit
}

// mountCloneSource mounts the image of the clone source src, a sized
// volume whose directory is open at volFd with its flock held exclusively,
// at a temporary entry of its snapshots directory, and returns the
// mount's root, open, and how to unmount and remove it all.
func (s *Store) mountCloneSource(volFd int, src CloneSource) (int, func(), error) {
	imgDir, err := cloneSourceDir(volFd, src)
	if err != nil {
		return -1, nil, err
	}
	defer unix.Close(imgDir)
	snapsFd, err := openSnapshots(volFd)
	if err != nil {
		return -1, nil, err
	}
	tmp := tmpPrefix + "clone-" + randomSuffix()
	cleanup := func() {
		_ = removeAllAt(snapsFd, tmp, s.dev)
		unix.Close(snapsFd)
	}
	if err := unix.Mkdirat(snapsFd, tmp, 0o700); err != nil {
		cleanup()
		return -1, nil, &os.PathError{Op: "mkdirat", Path: tmp, Err: err}
	}
	if err := unix.Mkdirat(snapsFd, tmp+"/"+exportMount, 0o700); err != nil {
		cleanup()
		return -1, nil, &os.PathError{Op: "mkdirat", Path: exportMount, Err: err}
	}
	// Where openSnapshots looks for the mount a dead process left.
	target := fsx.ProcPath(snapsFd) + "/" + tmp + "/" + exportMount
	if err := sizer.MountImageReadOnly(imgDir, target); err != nil {
		cleanup()
		return -1, nil, err
	}
	mnt, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		sizer.Detach(target)
		cleanup()
		return -1, nil, &os.PathError{Op: "open", Path: tmp, Err: err}
	}
	return mnt, func() {
		unix.Close(mnt)
		sizer.Unmount(target)
		cleanup()
	}, nil
}

// sourceMounted reports whether the file system of sized volume name of
// namespace ns is up: a container uses it.
func (s *Store) sourceMounted(ns, name string) bool {
	nsFd, volFd, err := s.openVolume(ns, name)
	if err != nil {
		return false
	}
	unix.Close(nsFd)
	defer unix.Close(volFd)
	v, err := s.Get(ns, name)
	return err == nil && v.Backend == BackendImage && sizer.IsDataMounted(volFd)
}

// cloneSourceDir opens the directory that holds the disk.img to clone: the
// snapshot's, or the volume's own (open at srcVol) while no file system of
// it is up, so the image is at rest.
func cloneSourceDir(srcVol int, src CloneSource) (int, error) {
	if src.Snapshot != "" {
		fd, err := fsx.OpenDir(srcVol, snapshotsDir+"/"+src.Snapshot)
		if errors.Is(err, fs.ErrNotExist) {
			return -1, fmt.Errorf("snapshot %q: %w", src.Snapshot, ErrNotFound)
		}
		return fd, err
	}
	img, err := sizer.OpenImage(srcVol)
	if err != nil {
		return -1, err
	}
	mounted := sizer.IsDataMounted(srcVol)
	_, bound := sizer.BoundLoop(img)
	// Just released, the volume's file system is unmounted lazily and its
	// loop device detached once written back: wait a little for that, so
	// a clone right after the last container goes is not refused.
	for try := 0; !mounted && bound && try < cloneSettleTries; try++ {
		time.Sleep(cloneSettleStep)
		_, bound = sizer.BoundLoop(img)
	}
	img.Close()
	if mounted || bound {
		return -1, fmt.Errorf("%w: %q is in use, and its image changes under its live file system; "+
			"take a snapshot of it and name that (cloneOf: %s@SNAP)", ErrInUse, src.Volume, src.Volume)
	}
	return unix.Openat(srcVol, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// How long a cloneOf waits, inside the NRI request, for the loop device of
// a source released a moment ago to detach: 100 ms at most.
const (
	cloneSettleTries = 20
	cloneSettleStep  = 5 * time.Millisecond
)
