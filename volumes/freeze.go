package volumes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// A snapshot of a sized image volume freezes the volume's file system for
// the moment of the clone of its image. A frozen file system hangs every
// writer on the node until it is thawed, and a process killed while it holds
// one frozen never thaws it: so each freeze is recorded first, by a marker
// ROOT/volumes/.frozen/NS,NAME, and every Open of the store (each CLI command,
// a plugin start) thaws what a dead process left.
//
// The marker is flocked by the process that froze, for as long as it does: a
// marker whose flock can be taken is one a dead process left. It is made
// under a temporary name, flocked, then renamed into place, so no other
// process ever sees it unlocked while its maker lives; and whoever thaws for
// a dead process holds the marker's flock while it thaws and unlinks, and
// checks the marker is still linked, so a thaw never lands on a later freeze.
// The markers live in frozenDir.
//
// holdFrozenEnv, for tests only, makes a snapshot sleep that long while the
// file system is frozen, so a test can kill the process there.
const holdFrozenEnv = "NRI_VOLUMES_TEST_HOLD_FROZEN"

func frozenMarker(ns, name string) string { return ns + "," + name }

// freezeData freezes the file system mounted at the _data open at dataFd,
// of volume name in namespace ns, and returns the function that thaws it;
// the caller defers that at once. The caller holds the volume's flock, so
// there is one freeze of a volume at a time.
func (s *Store) freezeData(ns, name string, dataFd int) (thaw func() error, err error) {
	// Only the volume's own ext4, never the store's file system: a freeze
	// of that would hang every writer of the node, this process included.
	if err := checkVolumeFileSystem(dataFd, s.dev); err != nil {
		return nil, volumeError(ns, name, err)
	}
	dirFd, err := s.openStoreDir()
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirFd)
	fdir, err := ensureDirAt(dirFd, frozenDir)
	if err != nil {
		return nil, err
	}
	marker := frozenMarker(ns, name)
	// A freeze that a killed snapshot of this volume left is undone first.
	thawAbandoned(fdir, marker, false, func() (int, func(), error) { return dataFd, func() {}, nil })
	tmp := tmpPrefix + randomSuffix()
	mfd, err := unix.Openat(fdir, tmp, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		unix.Close(fdir)
		return nil, &os.PathError{Op: "openat", Path: frozenDir + "/" + tmp, Err: err}
	}
	undo := func() {
		unix.Close(mfd)
		unix.Close(fdir)
	}
	if err := fsx.Flock(mfd, unix.LOCK_EX); err != nil {
		unix.Unlinkat(fdir, tmp, 0)
		undo()
		return nil, err
	}
	if err := renameNoReplace(fdir, tmp, fdir, marker); err != nil {
		unix.Unlinkat(fdir, tmp, 0)
		undo()
		return nil, &os.PathError{Op: "renameat", Path: frozenDir + "/" + marker, Err: err}
	}
	if err := snapfs.Freeze(dataFd); err != nil {
		unix.Unlinkat(fdir, marker, 0)
		undo()
		return nil, err
	}
	if d, err := time.ParseDuration(os.Getenv(holdFrozenEnv)); err == nil {
		time.Sleep(d)
	}
	return func() error {
		err := snapfs.Thaw(dataFd)
		unix.Unlinkat(fdir, marker, 0)
		undo()
		return err
	}, nil
}

// thawAbandoned thaws the file system of the freeze that marker (in the
// directory open at fdir) records, if the process that froze is gone, and
// removes the marker. openFS opens a directory of the frozen file system
// (fd -1: it is gone; only the marker is removed) and returns what to call
// once it is thawed. nonblock skips a marker that a live process holds.
func thawAbandoned(fdir int, marker string, nonblock bool, openFS func() (fd int, done func(), err error)) error {
	mfd, err := unix.Openat(fdir, marker, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "openat", Path: frozenDir + "/" + marker, Err: err}
	}
	defer unix.Close(mfd)
	how := unix.LOCK_EX
	if nonblock {
		how |= unix.LOCK_NB
	}
	if err := fsx.Flock(mfd, how); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil // a live snapshot holds it
		}
		return err
	}
	st, err := fsx.Fstat(mfd)
	if err != nil || st.Nlink == 0 {
		return err // its maker thawed and removed it meanwhile
	}
	if strings.HasPrefix(marker, tmpPrefix) {
		// Made, never renamed into place: nothing was frozen.
		return unix.Unlinkat(fdir, marker, 0)
	}
	fd, done, err := openFS()
	if err == nil && fd >= 0 {
		err = snapfs.Thaw(fd)
		if errors.Is(err, snapfs.ErrNotFrozen) {
			err = nil
		}
		done()
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return unix.Unlinkat(fdir, marker, 0)
}

// thawAbandonedLocked thaws every volume that a process killed during a
// snapshot left frozen; Open calls it under the exclusive lock. A marker
// that a live snapshot holds is left alone, and so is one it cannot act on
// (Check does not report it; the next Open tries again).
func (s *Store) thawAbandonedLocked() {
	fdir, err := fsx.OpenDir(s.dirFd, frozenDir)
	if err != nil {
		return
	}
	defer unix.Close(fdir)
	names, err := fsx.ReadDirNames(fdir)
	if err != nil {
		return
	}
	for _, m := range names {
		ns, name, _ := strings.Cut(m, ",")
		_ = thawAbandoned(fdir, m, true, func() (int, func(), error) {
			if ValidateNamespace(ns) != nil || ValidateName(name) != nil {
				return -1, nil, nil
			}
			volFd, err := fsx.OpenDir(s.dirFd, ns+"/"+name)
			if errors.Is(err, fs.ErrNotExist) {
				return -1, nil, nil
			}
			if err != nil {
				return -1, nil, err
			}
			defer unix.Close(volFd)
			if sizer.IsDataMounted(volFd) {
				fd, err := fsx.OpenDir(volFd, dataDir)
				return fd, func() { unix.Close(fd) }, err
			}
			return mountFrozenLoop(fdir, volFd)
		})
	}
}

// mountFrozenLoop reaches the file system of the disk.img of the volume
// directory open at volFd when it is mounted nowhere the store can see: a
// container's removal unmounts it (lazily) even while it is frozen, and the
// frozen file system then lives on with its loop device, which the next use
// of the volume would mount again, frozen. Mounting that loop device once
// more, at a temporary directory in the directory open at fdir, gives the
// same file system, to thaw. It returns -1 when no loop device holds the
// image.
func mountFrozenLoop(fdir, volFd int) (int, func(), error) {
	img, err := sizer.OpenImage(volFd)
	if err != nil {
		return -1, nil, nil
	}
	dev, bound := sizer.BoundLoop(img)
	img.Close()
	if !bound {
		return -1, nil, nil
	}
	tmp := tmpPrefix + "thaw-" + randomSuffix()
	if err := unix.Mkdirat(fdir, tmp, 0o700); err != nil {
		return -1, nil, &os.PathError{Op: "mkdirat", Path: tmp, Err: err}
	}
	target := fsx.ProcPath(fdir) + "/" + tmp
	if err := sizer.MountLoop(dev, target); err != nil {
		unix.Unlinkat(fdir, tmp, unix.AT_REMOVEDIR)
		return -1, nil, fmt.Errorf("mount %s to thaw it: %w", dev, err)
	}
	done := func() {
		sizer.Detach(target)
		unix.Unlinkat(fdir, tmp, unix.AT_REMOVEDIR)
	}
	fd, err := fsx.OpenDir(fdir, tmp)
	if err != nil {
		done()
		return -1, nil, err
	}
	return fd, func() { unix.Close(fd); done() }, nil
}

// Thawer is the worker that has the store look for abandoned freezes every
// interval (see thawAbandonedLocked) until it is closed: the plugin runs for
// weeks, and a CLI killed while it held a volume frozen must not hang that
// volume's writers until some other process opens the store. A look is one
// readdir of an empty directory; the lock is taken only when a marker is
// there.
func Thawer(interval time.Duration) Worker {
	return func(s *Store) { s.startThawer(interval) }
}

func (s *Store) startThawer(interval time.Duration) {
	go func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for range tick.C {
			pending, closed := s.freezesRecorded()
			if closed {
				return
			}
			if pending {
				_ = s.locked(context.Background(), "", unix.LOCK_EX, false, func() error {
					s.thawAbandonedLocked()
					return nil
				})
			}
		}
	}()
}

// freezesRecorded reports whether a freeze marker exists, and whether the
// store is closed.
func (s *Store) freezesRecorded() (pending, closed bool) {
	s.enter(context.Background())
	defer s.leave()
	if s.closed {
		return false, true
	}
	fd, err := fsx.OpenDir(s.dirFd, frozenDir)
	if err != nil {
		return false, false
	}
	defer unix.Close(fd)
	first, err := fsx.FirstEntry(fd)
	return err == nil && first != "", false
}

// checkVolumeFileSystem refuses a descriptor that is not on a sized
// volume's own ext4: on the device of the store (storeDev), or on any file
// system but ext4.
func checkVolumeFileSystem(dataFd int, storeDev uint64) error {
	st, err := fsx.Fstat(dataFd)
	if err != nil {
		return err
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(dataFd, &fs); err != nil {
		return &os.PathError{Op: "fstatfs", Path: dataDir, Err: err}
	}
	if st.Dev == storeDev || fs.Type != unix.EXT4_SUPER_MAGIC {
		return fmt.Errorf("%w: its file system is not up (unmounted meanwhile?); try again", ErrBusy)
	}
	return nil
}
