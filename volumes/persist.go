package volumes

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// syncPending, an empty file in the directory of a volume made PersistLater,
// says the volume is not known to be durable yet. Persist removes it after its
// fsyncs, so a later Persist (the hook's, after the plugin's) costs a lookup
// instead of fsyncs that would each flush the disk's cache. After a crash,
// a marker that survived only makes the next Persist redo its fsyncs.
const syncPending = "sync-pending"

// markSyncPending creates syncPending in the volume directory open at fd,
// before the volume gets its name.
func markSyncPending(fd int) error {
	f, err := unix.Openat(fd, syncPending, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: syncPending, Err: err}
	}
	return unix.Close(f)
}

// Persist makes the named volume ns/name durable, as Create makes it: its
// volume.json, the entries of its directory and its name in the namespace.
// Acquire with Request.PersistLater leaves that to the caller, who calls Persist
// before a container uses the volume; the plugin calls it in the
// background and the copy-up hook, which runs before the container's
// process, calls it again, and finds nothing to do when the background call
// is done. A volume made durable by Create, or synced before, is left
// alone. It takes no lock: it writes only its marker, and a volume removed
// meanwhile fails it with ErrNotFound.
func (cu CopyUps) Persist(ns, name string) error {
	s := cu.s
	nsFd, volFd, err := s.openVolume(ns, name)
	if err != nil {
		return err
	}
	defer unix.Close(nsFd)
	defer unix.Close(volFd)
	if pending, err := existsAt(volFd, syncPending); err != nil {
		return volumeError(ns, name, err)
	} else if !pending {
		return nil
	}
	metaFd, err := fsx.OpenBeneath(volFd, metaFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return volumeError(ns, name, err)
	}
	defer unix.Close(metaFd)
	for _, fd := range []struct {
		fd   int
		what string
	}{{metaFd, metaFile}, {volFd, "."}, {nsFd, ".."}} {
		if err := unix.Fsync(fd.fd); err != nil {
			return volumeError(ns, name, &os.PathError{Op: "fsync", Path: fd.what, Err: err})
		}
	}
	// A sized volume's charge in the ledger was written without them too.
	if v, err := s.loadVolumeAt(volFd, ns, name); err == nil && v.Limit > 0 {
		if err := s.syncLedger(); err != nil {
			return volumeError(ns, name, err)
		}
	}
	// Only now: a marker gone says the fsyncs are done. Two Persists at once
	// both fsync, and one of them removes it.
	if err := unix.Unlinkat(volFd, syncPending, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return volumeError(ns, name, &os.PathError{Op: "unlinkat", Path: syncPending, Err: err})
	}
	return nil
}

// removeUnfinishedLocked moves ns/name, an entry of the namespace open at
// nsFd, into the trash when it is a named volume whose making never
// finished: a node that crashed before the volume's Persist can leave its
// sync-pending marker beside a volume.json that is empty, cut short or
// missing, and an empty _data. No container ran on it, since containers
// start only after the sync, so nothing is lost and the name is free again
// for the request or the create that meets it. It reports whether it did.
func (s *Store) removeUnfinishedLocked(nsFd int, ns, name string) bool {
	volFd, err := fsx.OpenDir(nsFd, name)
	if err != nil {
		return false
	}
	defer unix.Close(volFd)
	if pending, err := existsAt(volFd, syncPending); err != nil || !pending {
		return false
	}
	if meta, err := fsx.ReadFile(volFd, metaFile, maxMetaSize); err == nil && json.Valid(meta) {
		return false
	}
	if dataFd, err := fsx.OpenDir(volFd, dataDir); err == nil {
		names, err := fsx.ReadDirNames(dataFd)
		unix.Close(dataFd)
		if err != nil || len(names) > 0 {
			return false
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if s.idx != nil && len(s.idx.usedBy(volumeKey(ns, name))) > 0 {
		return false
	}
	if _, err := s.moveToTrashLocked(nsFd, name); err != nil {
		return false
	}
	s.kickReaper()
	return true
}

// removeUnfinished is removeUnfinishedLocked by namespace name.
func (s *Store) removeUnfinished(ns, name string) bool {
	nsFd, err := fsx.OpenDir(s.dirFd, ns)
	if err != nil {
		return false
	}
	defer unix.Close(nsFd)
	return s.removeUnfinishedLocked(nsFd, ns, name)
}
