package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// The data of a removed volume goes in two steps. Under the store's lock the
// volume is renamed into ROOT/volumes/.trash: quick whatever its size, and
// the name is free at once. Deleting the data takes as long as the data is
// large and happens outside the lock: by the caller (the CLI's rm and prune,
// which report the space reclaimed) or by the reaper (the plugin, whose NRI
// requests must stay short; see Reaper). Whoever deletes an entry of the
// trash holds its flock, so two processes never delete one tree at once, and
// what a process leaves there when it dies is deleted by the next reaper or
// the next CLI rm or prune (ReapTrash); Check reports what is left. See
// trashDir.

// moveToTrashLocked renames name, an entry of the directory open at dirFd,
// into the trash and returns its name there.
func (s *Store) moveToTrashLocked(dirFd int, name string) (string, error) {
	trash := randomSuffix()
	if err := unix.Renameat(dirFd, name, s.trashFd, trash); err != nil {
		return "", &os.PathError{Op: "renameat", Path: name, Err: err}
	}
	return trash, nil
}

// detacher sets volumes aside under the store's lock, for one operation: one
// read of the mount table and one fsync per namespace serve all the volumes
// it detaches.
type detacher struct {
	s       *Store
	mounts  []string
	touched map[string]bool
}

func (s *Store) newDetacher() (*detacher, error) {
	mounts, err := fsx.MountPoints()
	if err != nil {
		return nil, err
	}
	return &detacher{s: s, mounts: mounts, touched: map[string]bool{}}, nil
}

// detach checks that the volume may go and moves it into the trash, whose
// entry name it returns. A broken entry that is no directory (say, a symlink
// planted in the store) is unlinked itself, never followed; the returned
// name is "" then. Call sync before the lock is released.
func (d *detacher) detach(ns, name string) (string, error) {
	s := d.s
	nsFd, err := fsx.OpenDir(s.dirFd, ns)
	if err != nil {
		return "", publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	volFd, err := fsx.OpenDir(nsFd, name)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if err := unix.Unlinkat(nsFd, name, 0); err != nil {
			return "", volumeError(ns, name, err)
		}
		d.touched[ns] = true
		return "", nil
	}
	if err != nil {
		return "", publicError(ns, name, err)
	}
	defer unix.Close(volFd)
	if users := s.idx.usedBy(volumeKey(ns, name)); len(users) > 0 {
		return "", &OpError{Namespace: ns, Name: name, Refs: users, Err: ErrInUse}
	}
	if err := unix.Flock(volFd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return "", volumeError(ns, name, fmt.Errorf("%w: copy-up in progress", ErrInUse))
		}
		return "", volumeError(ns, name, err)
	}
	// A sized volume's own file system comes down first; a volume whose
	// metadata cannot be read is removed like an unsized one.
	var limit int64
	v, loadErr := s.loadVolumeAt(volFd, ns, name)
	if loadErr == nil && v.Limit > 0 {
		limit = v.Limit
		z, err := sizerFor(v.Backend)
		if err == nil {
			err = sizerError(z.Deactivate(volFd, filepath.Join(s.dir, ns, name)))
		}
		if err != nil {
			return "", volumeError(ns, name, err)
		}
		if d.mounts, err = fsx.MountPoints(); err != nil {
			return "", volumeError(ns, name, err)
		}
	}
	if err := d.checkNoMounts(volFd, ns, name); err != nil {
		return "", err
	}
	trash, err := s.unnameLocked(nsFd, ns, name, limit)
	if err != nil {
		return "", err
	}
	s.counted(func(c *nsCounts) { c.drop(ns, name) })
	d.touched[ns] = true
	return trash, nil
}

// unnameLocked, the reverse of nameLocked, moves volume name of the
// namespace open at nsFd to the trash and gives back to the ledger its size
// limit (0: unsized) and what its snapshots hold. It returns the trash
// entry, for the caller to reap.
func (s *Store) unnameLocked(nsFd int, ns, name string, limit int64) (string, error) {
	snaps := snapshotsAt(nsFd, name)
	trash, err := s.moveToTrashLocked(nsFd, name)
	if err != nil {
		return "", volumeError(ns, name, err)
	}
	s.refundLocked(ns, limit)
	_ = s.chargeSnapshotsLocked(ns, -snaps.Bytes, -snaps.Count) // best effort, as refundLocked
	return trash, nil
}

// checkNoMounts refuses a volume with a mount at or below its directory:
// removing it would delete whatever is mounted there, or fail half-way.
func (d *detacher) checkNoMounts(volFd int, ns, name string) error {
	st, err := fsx.Fstat(volFd)
	if err != nil {
		return volumeError(ns, name, err)
	}
	if st.Dev != d.s.dev {
		return volumeError(ns, name, fmt.Errorf("%w: its directory is a mount point", ErrInUse))
	}
	if mounts := fsx.MountsBelow(d.mounts, filepath.Join(d.s.dir, ns, name)); len(mounts) > 0 {
		return volumeError(ns, name, fmt.Errorf("%w: something is mounted inside it (%s)",
			ErrInUse, strings.Join(mounts, ", ")))
	}
	return nil
}

// sync makes the removals durable: a volume removed stays removed after a
// crash. It needs no store lock (the renames are done and visible; this only
// writes them to disk), so long operations call it after releasing the lock:
// an fsync on a busy disk can take a long time.
func (d *detacher) sync() error {
	var errs []error
	for ns := range d.touched {
		fd, err := d.s.openNamespace(ns)
		if err == nil {
			err = unix.Fsync(fd)
			unix.Close(fd)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("namespace %q: %w", ns, err))
		}
	}
	return errors.Join(errs...)
}

// deleteTrash deletes the trash entry trash now, first measuring its data
// when measure is set. It needs no store lock.
func (s *Store) deleteTrash(trash string, measure bool) (int64, error) {
	if trash == "" {
		return 0, nil
	}
	fd, err := s.openTrash()
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return reapEntry(fd, trash, s.dev, true, measure)
}

// openTrash opens the trash directory for use outside the store lock.
func (s *Store) openTrash() (int, error) {
	if err := s.enterOpen("opening the trash"); err != nil {
		return -1, err
	}
	defer s.leave()
	return fsx.OpenDir(s.dirFd, trashDir)
}

// reapEntry deletes entry name of the trash open at trashFd, measuring its
// data first when measure is set. It holds the entry's flock while it
// works: with wait it waits for another deleter and then finds the entry
// gone; without, it leaves an entry another process is deleting to that one.
func reapEntry(trashFd int, name string, dev uint64, wait, measure bool) (int64, error) {
	st, err := fsx.Lstat(trashFd, name)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if !fsx.IsDir(&st) {
		if err := unix.Unlinkat(trashFd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return 0, &os.PathError{Op: "unlinkat", Path: name, Err: err}
		}
		return 0, nil
	}
	fd, err := unix.Openat(trashFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	defer unix.Close(fd)
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := fsx.Flock(fd, how); errors.Is(err, unix.EWOULDBLOCK) {
		return 0, nil
	} else if err != nil {
		return 0, &os.PathError{Op: "flock", Path: name, Err: err}
	}
	if st, err := fsx.Fstat(fd); err != nil || st.Nlink == 0 {
		return 0, err // deleted by the deleter this one waited for
	}
	var size int64
	if measure {
		if dfd, err := fsx.OpenDir(fd, dataDir); err == nil {
			if st, err := fsx.Fstat(dfd); err == nil {
				size, _ = fsx.DiskUsage(dfd, st.Dev)
			}
			unix.Close(dfd)
		}
		// An image backend's space is what its file holds on disk.
		if st, err := fsx.Lstat(fd, imageFile); err == nil {
			size += st.Blocks * 512
		}
	}
	// A btrfs backend's _data is a subvolume, which removal does not
	// cross into, as it would not into a mount.
	if err := sizer.DestroySubvolume(trashFd, name); err != nil {
		return size, err
	}
	if err := removeContentsAt(fd, dev); err != nil {
		return size, err
	}
	if err := unix.Unlinkat(trashFd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return size, &os.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	return size, nil
}

// Reaper is the worker that deletes, in the background, the data of removed
// volumes: what the trash holds now (left by an earlier process that died)
// and what later removals put there. The plugin runs it so that its NRI
// requests only move volumes into the trash. Each failure goes to onErr; an
// entry that cannot be deleted (something mounted inside it) is tried again
// on the next removal. Close stops the reaper between two entries. Starting
// it again does nothing.
func Reaper(onErr func(error)) Worker {
	return func(s *Store) { s.startReaper(onErr) }
}

func (s *Store) startReaper(onErr func(error)) {
	if err := s.enter(context.Background()); err != nil {
		return
	}
	defer s.leave()
	if s.closed || s.reapKick != nil {
		return
	}
	fd, err := fsx.OpenDir(s.dirFd, trashDir)
	if err != nil {
		onErr(fmt.Errorf("starting the reaper: %w", err))
		return
	}
	kick, stop := make(chan struct{}, 1), make(chan struct{})
	s.reapKick, s.reapStop = kick, stop
	kick <- struct{}{}
	go func() {
		defer unix.Close(fd)
		// This goroutine keeps its thread to the end, which then exits
		// with it: the low priority stays with the reaper's work.
		runtime.LockOSThread()
		if err := lowerThreadPriority(); err != nil {
			onErr(fmt.Errorf("the reaper runs at normal priority: %w", err))
		}
		for {
			select {
			case <-stop:
				return
			case <-kick:
			}
			if err := reapAll(fd, s.dev, stop); err != nil {
				onErr(err)
			}
		}
	}()
}

// Background work yields to container starts. Deleting a removed pod's
// volumes is what a node does while the pod's replacement starts (a
// Deployment's rollout, a restart), and unlinking the inodes of a
// copied-up image directory costs kernel time (0.1 to 1 ms an inode on the
// VM of BENCHMARKS.md): in an in-process profile of a container in a new
// pod each time, the reaper's unlinks of the pod before ran inside the next
// container's create and copy-up (issue 19). The reaper's thread runs at
// the lowest CFS weight and the lowest best-effort I/O priority: it still
// always progresses (unlike the idle classes, which a busy node could
// starve forever), in the time that starts leave.
const (
	reaperNice = 19
	// ioprio_set(2): IOPRIO_WHO_PROCESS names a thread by its ID, and a
	// priority is its class shifted by IOPRIO_CLASS_SHIFT, plus the level.
	ioprioWhoProcess = 1
	ioprioClassShift = 13
	ioprioClassBE    = 2
	reaperIOLevel    = 7
)

// lowerThreadPriority gives the calling thread, which the caller has
// locked, the CPU and I/O priorities of background work: the reaper's and
// the spare refiller's. Linux applies both to the thread alone.
func lowerThreadPriority() error {
	tid := unix.Gettid()
	var errs []error
	prio := ioprioClassBE<<ioprioClassShift | reaperIOLevel
	if _, _, e := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), uintptr(prio)); e != 0 {
		errs = append(errs, fmt.Errorf("ioprio_set best-effort %d: %w", reaperIOLevel, e))
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, reaperNice); err != nil {
		errs = append(errs, fmt.Errorf("setpriority %d: %w", reaperNice, err))
	}
	return errors.Join(errs...)
}

// reapAll deletes every entry of the trash open at fd, until stop is closed.
func reapAll(fd int, dev uint64, stop <-chan struct{}) error {
	names, err := fsx.ReadDirNames(fd)
	if err != nil {
		return fmt.Errorf("reading the trash: %w", err)
	}
	sort.Strings(names)
	var errs []error
	for _, n := range names {
		select {
		case <-stop:
			return nil
		default:
		}
		if _, err := reapEntry(fd, n, dev, false, false); err != nil {
			errs = append(errs, fmt.Errorf("deleting the data of a removed volume (%s): %w", filepath.Join(trashDir, n), err))
		}
	}
	return errors.Join(errs...)
}

// ReapTrash deletes what the trash holds now: the data of removed volumes
// that a killed rm or prune, or a plugin that stopped, left behind. The
// CLI's rm and prune call it, so leftovers go without a running plugin. It
// makes one pass over the entries it finds (what later removals put there
// is theirs to delete), leaves an entry that another process is deleting to
// that one, and needs no store lock.
func (s *Store) ReapTrash() error {
	fd, err := s.openTrash()
	if err != nil {
		return fmt.Errorf("opening the trash: %w", err)
	}
	defer unix.Close(fd)
	return reapAll(fd, s.dev, nil)
}

// checkTrashLocked reports each entry of the trash that no process is
// deleting now (whoever deletes one holds its flock): data of a removed
// volume that no one deleted (a process killed while deleting it, or no
// plugin running since) or that cannot be deleted, with something mounted
// inside.
func (s *Store) checkTrashLocked() ([]Problem, error) {
	fd, err := fsx.OpenDir(s.dirFd, trashDir)
	if err != nil {
		return nil, fmt.Errorf("opening the trash: %w", err)
	}
	defer unix.Close(fd)
	names, err := fsx.ReadDirNames(fd)
	if err != nil {
		return nil, fmt.Errorf("reading the trash: %w", err)
	}
	sort.Strings(names)
	held, _ := fsx.Flocked()
	mounts, _ := fsx.MountPoints()
	var probs []Problem
	for _, n := range names {
		st, err := fsx.Lstat(fd, n)
		if errors.Is(err, unix.ENOENT) || err == nil && held[fsx.FileID{Dev: st.Dev, Ino: st.Ino}] {
			continue // deleted, or being deleted
		}
		reason := "data of a removed volume, not deleted yet: the next volume rm or prune, or the plugin, deletes it"
		if m := fsx.MountsBelow(mounts, filepath.Join(s.dir, trashDir, n)); len(m) > 0 {
			reason = "data of a removed volume that cannot be deleted: something is mounted inside it (" + strings.Join(m, ", ") + ")"
		}
		probs = append(probs, Problem{Name: trashDir + "/" + n, Reason: reason})
	}
	return probs, nil
}

// kickReaper wakes the reaper, if this Store runs one. The caller holds the
// in-process lock.
func (s *Store) kickReaper() {
	select {
	case s.reapKick <- struct{}{}:
	default:
	}
}
