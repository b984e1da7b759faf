package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Spares are inodes made before the request that needs them. On some disks
// making an inode costs far more than renaming one: on the VM of
// BENCHMARKS.md a mkdir or an O_CREAT takes 0.1 to 1 ms of kernel time, a
// rename 0.03 ms. A container with a new named and a new anonymous volume
// makes eight or nine: each volume's directory, _data and volume.json, the
// named one's sync-pending marker, its pod's list and its own. A Store that runs Spares keeps some of each, made
// ahead in ROOT/volumes/.spare, and a request takes one with a rename:
//
//   - v-<random>: a volume directory (0700) holding an empty _data (0755)
//     and an empty volume.json (0600), all root's: what createLocked makes
//     before it fills them in;
//   - f-<random>: an empty file (0600), for a reference list or the
//     sync-pending marker of a new named volume.
//
// A spare is built under a temporary name and renamed to its own when whole,
// so a name there always means a whole spare. A volume spare leaves .spare,
// to the temporary name createLocked builds under, before anything in it
// changes: a process that dies while filling it leaves the temporary entry
// that Open removes, as without spares. A file spare is written in place
// and renamed to its list's name; its next taker truncates it. Only the
// process that runs Spares uses them, and it starts by moving what an
// earlier process left there into the trash. See spareDir.
const (
	// How many of each are kept: enough for a pod of a few containers with
	// new volumes; a burst beyond it makes its inodes as without spares
	// while the pool fills again.
	spareVolumesKept = 4
	spareFilesKept   = 8
)

// spares is a Store's pool; the in-process lock guards it.
type spares struct {
	fd    int      // ROOT/volumes/.spare, -1 until the Spares worker starts
	vols  []string // whole volume spares, taken from the end
	files []string // whole file spares, taken from the end
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{} // closed when the refiller has stopped
}

// Spares is the worker that keeps spares, made in the background, for the
// new volumes and reference lists of later requests. The plugin runs it; a
// short-lived process (the CLI, the hook) gains nothing from it. Each
// failure to make one goes to onErr, and the pool waits for the next
// request that takes one, or finds none, before it tries again. Starting it
// again does nothing; Close stops it.
func Spares(onErr func(error)) Worker {
	return func(s *Store) { s.startSpares(onErr) }
}

func (s *Store) startSpares(onErr func(error)) {
	var own int
	err := s.locked(context.Background(), "", unix.LOCK_EX, false, func() error {
		if s.closed || s.spare.kick != nil {
			return errSparesRunning
		}
		fd, err := ensureDirAt(s.dirFd, spareDir)
		if err != nil {
			return err
		}
		s.sweepSparesLocked(fd)
		// The refiller's own descriptor, which Close cannot pull from under
		// it.
		if own, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			unix.Close(fd)
			return err
		}
		s.spare = spares{fd: fd, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
		return nil
	})
	if errors.Is(err, errSparesRunning) {
		return
	}
	if err != nil {
		onErr(fmt.Errorf("starting the spares for new volumes: %w", err))
		return
	}
	kick, stop, done := s.spare.kick, s.spare.stop, s.spare.done
	kick <- struct{}{}
	go func() {
		defer close(done)
		s.refill(own, kick, stop, onErr)
	}()
}

// refill makes spares in the directory open at fd until the pool is full,
// each time it is kicked.
func (s *Store) refill(fd int, kick, stop chan struct{}, onErr func(error)) {
	defer unix.Close(fd)
	// Spares are made while the container that took some is still being
	// set up by containerd and runc, whose work is on that container's
	// path to its start and this is not: the refiller's thread, never
	// handed back to the Go scheduler (it ends with the goroutine), yields
	// the CPU and the disk to them, as the reaper's does.
	runtime.LockOSThread()
	if err := lowerThreadPriority(); err != nil {
		onErr(fmt.Errorf("the spares are made at normal priority: %w", err))
	}
	for {
		select {
		case <-stop:
			return
		case <-kick:
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			vol, ok := s.spareWanted()
			if !ok {
				break
			}
			build, prefix := makeFileSpare, spareFilePrefix
			if vol {
				build, prefix = makeVolumeSpare, spareVolumePrefix
			}
			name := prefix + randomSuffix()
			if err := build(fd, name, s.dev); err != nil {
				onErr(fmt.Errorf("making a spare for new volumes: %w", err))
				break
			}
			s.addSpare(fd, name, vol)
		}
	}
}

// spareWanted says what the pool lacks: a volume spare (vol), a file
// spare, or nothing (!ok).
func (s *Store) spareWanted() (vol, ok bool) {
	s.enter(context.Background())
	defer s.leave()
	switch {
	case s.closed:
		return false, false
	case len(s.spare.vols) < spareVolumesKept:
		return true, true
	default:
		return false, len(s.spare.files) < spareFilesKept
	}
}

// addSpare puts name, just made in the directory open at fd, into the pool.
func (s *Store) addSpare(fd int, name string, vol bool) {
	s.enter(context.Background())
	defer s.leave()
	switch {
	case s.closed:
		removeAllAt(fd, name, s.dev)
	case vol:
		s.spare.vols = append(s.spare.vols, name)
	default:
		s.spare.files = append(s.spare.files, name)
	}
}

// makeVolumeSpare builds a volume spare under a temporary name and renames
// it to name once whole.
func makeVolumeSpare(fd int, name string, dev uint64) error {
	tmp := tmpPrefix + randomSuffix()
	if err := unix.Mkdirat(fd, tmp, 0o700); err != nil {
		return &os.PathError{Op: "mkdirat", Path: tmp, Err: err}
	}
	err := func() error {
		volFd, err := fsx.OpenDir(fd, tmp)
		if err != nil {
			return err
		}
		defer unix.Close(volFd)
		if err := sizer.MkdirData(volFd); err != nil {
			return err
		}
		if err := createFileAt(volFd, metaFile, nil, false); err != nil {
			return err
		}
		if err := renameNoReplace(fd, tmp, fd, name); err != nil {
			return &os.PathError{Op: "renameat2", Path: name, Err: err}
		}
		return nil
	}()
	if err != nil {
		removeAllAt(fd, tmp, dev)
	}
	return err
}

func makeFileSpare(fd int, name string, _ uint64) error {
	return createFileAt(fd, name, nil, false)
}

// kickSpares wakes the refiller after a take, or when a request finds the
// pool empty: a refiller that failed waits for one of them. The caller
// holds the in-process lock.
func (s *Store) kickSpares() {
	select {
	case s.spare.kick <- struct{}{}:
	default:
	}
}

// takeSpareVolumeLocked moves a volume spare to tmp in the namespace open at
// nsFd. It reports false, having moved nothing, when there is none to take:
// the pool is empty, or the namespace is on another file system.
func (s *Store) takeSpareVolumeLocked(nsFd int, tmp string) bool {
	if len(s.spare.vols) == 0 {
		s.kickSpares() // a refiller that failed waits for a take
	}
	for len(s.spare.vols) > 0 {
		last := len(s.spare.vols) - 1
		name := s.spare.vols[last]
		err := renameNoReplace(s.spare.fd, name, nsFd, tmp)
		if errors.Is(err, unix.EXDEV) {
			return false
		}
		s.spare.vols = s.spare.vols[:last]
		s.kickSpares()
		if err == nil {
			return true
		}
		// Gone (the Spares worker of another process on this store moved it
		// to the trash): the next one, or none.
	}
	return false
}

// takeSpareFileLocked takes a file spare out of the pool, if there is one,
// and wakes the refiller either way: a refiller that failed waits for a
// request that takes one or finds none.
func (s *Store) takeSpareFileLocked() (string, bool) {
	s.kickSpares()
	if len(s.spare.files) == 0 {
		return "", false
	}
	last := len(s.spare.files) - 1
	name := s.spare.files[last]
	s.spare.files = s.spare.files[:last]
	return name, true
}

// markSyncPendingLocked is markSyncPending with a file spare, when there is
// one, renamed to the marker.
func (s *Store) markSyncPendingLocked(fd int) error {
	if spare, ok := s.takeSpareFileLocked(); ok {
		if renameNoReplace(s.spare.fd, spare, fd, syncPending) == nil {
			return nil
		}
		unix.Unlinkat(s.spare.fd, spare, 0)
	}
	return markSyncPending(fd)
}

// sweepSparesLocked moves into the trash the spares in spareDir, open at
// fd, that an earlier process left: whole or not, filled or not, they are
// of a state this one does not know. The Spares worker runs it, under the
// exclusive lock, before its pool makes any.
func (s *Store) sweepSparesLocked(fd int) {
	names, err := fsx.ReadDirNames(fd)
	if err != nil {
		return
	}
	for _, n := range names {
		s.moveToTrashLocked(fd, n)
	}
	if len(names) > 0 {
		s.kickReaper()
	}
}
