package volumes

import (
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Recovery: a process killed at any moment leaves its work in one of the
// store's holding areas (layout.go), never half-written under a volume's
// name. recoverLocked, run once by Open under the exclusive lock (unless
// WithoutSweep), clears every holding area that the store's lock guards.
//
// The areas that other locks guard, or whose owner only a later moment
// knows, are cleared later, each for its reason:
//   - spareDir, by the Spares worker (sweepSparesLocked): the spares belong to the
//     one process that keeps a pool, and the CLI opens the store while the
//     plugin's pool is in use.
//   - frozenDir, again every few seconds by the plugin's thawer
//     (the Thawer worker): the plugin runs for weeks, and a CLI killed while it
//     held a volume frozen must not hang its writers until the next Open.
//   - a volume's snapshotsDir, by the next operation that takes the
//     volume's flock (openSnapshots): snapshots and exports hold that flock,
//     not the store's lock, so Open cannot tell a dead one from a running
//     one, and it would have to look into every volume.
//   - a volume's copy-up staging and markers, by its next copy-up
//     (copy_up.go), for the same reason: the hook copies under the volume's
//     flock alone, so that a copy-up never blocks the rest of the store.
//   - a volume's import marker, by its next import, under the same flock.
//   - unfinished volumes, by the Acquire or Create that meets the name
//     (removeUnfinishedLocked): telling one needs a look into each volume's
//     directory, and its removal the index of references (no container may
//     list it), neither of which every Open of the CLI should pay for.
//   - trashDir, by the reaper (the Reaper worker) or the CLI's rm and prune
//     (ReapTrash), outside the lock: deleting a large tree takes long, so
//     every sweep only moves into the trash.
//   - formatsDir's ready entries of the live process, by the formatter's
//     expiry (expireFormats): they are not leftovers but stock, dropped when
//     no request takes them within formatIdle.
//   - the reference lists, pins, pod copy-up records and image-empty
//     records of containers, pods and images gone, at the plugin's
//     Synchronize (SetReferences, Pins.RemoveStale, PodBudgets.ForgetAllBut,
//     EmptyTargets.RemoveAllBut): only the runtime knows which are gone.

// recoverLocked is Open's recovery pass. The order matters:
//  1. frozenDir first: a frozen file system hangs whatever touches it, and
//     the steps below unmount and read volumes.
//  2. temporary entries of VOLS and its namespaces, then formatsDir's
//     entries of dead processes, into the trash, each formatted one
//     unmounted first: the mount table read for step 5 then shows none of
//     their mounts.
//  3. temporary reference lists in refsDir and podsDir, removed: small
//     files, no data.
//  4. the ledger of sizes, rebuilt if missing or cut short, before step 5:
//     settling builds the index, which would otherwise scan every volume
//     for the ledger a second time.
//  5. pins no longer mounted, and sized volumes mounted but used by no
//     container: one read of the mount table serves both.
//
// What it cannot clear stays, for Check to report. Only a ledger that
// cannot be written fails Open.
func (s *Store) recoverLocked() error {
	s.thawAbandonedLocked()
	s.sweepTmpLocked()
	s.removeDeadFormatsLocked()
	s.sweepListTmpLocked()
	warning, err := s.ensureLedgerLocked()
	if err != nil {
		return err
	}
	if warning != "" {
		s.repairs = append(s.repairs, warning)
	}
	if all, err := fsx.MountPoints(); err == nil {
		s.pins.removeUnmountedPins(all)
		s.settleMountsLocked(all)
	}
	return nil
}

// sweepTmpLocked moves the temporary entries of VOLS and of each namespace,
// left by interrupted writes and removals, into the trash rather than
// deleting them: an interrupted removal can leave a large tree, and
// deleting it is the reaper's work, outside the lock.
func (s *Store) sweepTmpLocked() {
	nss, err := fsx.ReadDirNames(s.dirFd)
	if err != nil {
		return
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, tmpPrefix) {
			s.moveToTrashLocked(s.dirFd, ns)
			continue
		}
		if ValidateNamespace(ns) != nil {
			continue
		}
		nsFd, err := fsx.OpenDir(s.dirFd, ns)
		if err != nil {
			continue
		}
		names, err := fsx.ReadDirNames(nsFd)
		if err == nil {
			for _, n := range names {
				if strings.HasPrefix(n, tmpPrefix) {
					// A formatted image taken for a container is
					// mounted before it gets its name: taken down
					// first, or the mount, its loop device and
					// disk.img would outlive the entry, and the
					// reaper could never remove it.
					s.deactivateTmp(nsFd, n)
					s.moveToTrashLocked(nsFd, n)
				}
			}
		}
		unix.Close(nsFd)
	}
}

// sweepListTmpLocked removes the temporary files of reference lists
// replaced part-way.
func (s *Store) sweepListTmpLocked() {
	for _, fd := range []int{s.refsFd, s.podsFd} {
		names, err := fsx.ReadDirNames(fd)
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.HasPrefix(n, tmpPrefix) {
				removeAllAt(fd, n, s.dev)
			}
		}
	}
}

// removeDeadFormatsLocked moves into the trash the entries of processes that
// died: those whose flock nobody holds. It runs under the store's lock, at
// Open.
func (s *Store) removeDeadFormatsLocked() {
	dir, err := fsx.OpenDir(s.dirFd, formatsDir)
	if err != nil {
		return
	}
	defer unix.Close(dir)
	names, err := fsx.ReadDirNames(dir)
	if err != nil {
		return
	}
	for _, n := range names {
		fd, err := fsx.OpenDir(dir, n)
		if err != nil {
			s.moveToTrashLocked(dir, n)
			continue
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd) // a live process's
			continue
		}
		_ = (sizer.Image{}).Deactivate(fd, filepath.Join(s.dir, formatsDir, n))
		unix.Close(fd)
		s.moveToTrashLocked(dir, n)
	}
}
