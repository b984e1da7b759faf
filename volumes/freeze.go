package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
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
const (
	frozenDir = ".frozen"
	// holdFrozenEnv, for tests only, makes a snapshot sleep that long while
	// the file system is frozen, so a test can kill the process there.
	holdFrozenEnv = "NRI_VOLUMES_TEST_HOLD_FROZEN"
)

func frozenMarker(ns, name string) string { return ns + "," + name }

// freezeData freezes the file system mounted at the _data open at dataFd,
// of volume name in namespace ns, and returns the function that thaws it;
// the caller defers that at once. The caller holds the volume's flock, so
// there is one freeze of a volume at a time.
func (s *Store) freezeData(ns, name string, dataFd int) (thaw func() error, err error) {
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
	thawAbandoned(fdir, marker, false, func() (int, bool, error) { return dataFd, false, nil })
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
	if err := flockRetry(mfd, unix.LOCK_EX); err != nil {
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
// removes the marker. openData opens the volume's _data while its file
// system is mounted there (ok false: the volume or its mount is gone; only
// the marker is removed), and says whether the descriptor is the caller's
// to close. nonblock skips a marker that a live process holds.
func thawAbandoned(fdir int, marker string, nonblock bool, openData func() (fd int, own bool, err error)) error {
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
	if err := flockRetry(mfd, how); err != nil {
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
	dataFd, own, err := openData()
	if err == nil && dataFd >= 0 {
		err = snapfs.Thaw(dataFd)
		if errors.Is(err, snapfs.ErrNotFrozen) {
			err = nil
		}
		if own {
			unix.Close(dataFd)
		}
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
		_ = thawAbandoned(fdir, m, true, func() (int, bool, error) {
			if ValidateNamespace(ns) != nil || ValidateName(name) != nil {
				return -1, false, fmt.Errorf("%w: marker %q names no volume", fs.ErrNotExist, m)
			}
			volFd, err := fsx.OpenDir(s.dirFd, ns+"/"+name)
			if err != nil {
				return -1, false, err
			}
			defer unix.Close(volFd)
			if !isDataMounted(volFd) {
				return -1, false, nil
			}
			fd, err := fsx.OpenDir(volFd, dataDir)
			return fd, true, err
		})
	}
}
