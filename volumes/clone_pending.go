package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/copyup"
)

// Clones that copy. A cloneOf whose source is a plain directory volume (or
// a snapshot of one) is a copy of a tree, which cannot run inside an NRI
// request. The request makes the clone as an empty volume whose directory
// holds clonePending, naming the source (NAME or NAME@SNAP), and no
// copy-up marker: it needs the copy-up hook, which runs before the
// container's process starts (so the start waits for the copy), outside
// the request. The hook copies through CopyUps.FillClone, which is CopyUps.Copy with
// the source's data in place of the image's: staged, moved into _data and
// marked done as one copy-up, never half done, bounded by the copy-up
// limits and charged to the pod's copy-up budget as any copy-up is. The
// marker goes once the copy is done; a copy cut short is redone.

// createPendingCloneLocked makes v, still absent, under the store's
// exclusive lock, as the empty clone of the plain volume sv, whose
// directory is open at srcVol, to be filled by the copy-up hook. The
// source must be there now: its snapshot, or the volume itself while no
// container uses it (a copy of a tree that changes is not consistent).
func (s *Store) createPendingCloneLocked(nsFd, srcVol int, v, sv *Volume, durable bool) error {
	ns, name, src := v.Namespace, v.Name, *v.cloneOf
	fail := func(err error) error { return volumeError(ns, name, fmt.Errorf("cloneOf %q: %w", src, err)) }
	if src.Snapshot != "" {
		fd, err := fsx.OpenDir(srcVol, snapshotsDir+"/"+src.Snapshot+"/"+dataDir)
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("snapshot %q: %w", src.Snapshot, ErrNotFound)
		}
		if err != nil {
			return fail(err)
		}
		unix.Close(fd)
	} else if users := s.idx.usedBy(sv.key()); len(users) > 0 {
		return fail(fmt.Errorf("%w: %q is a plain directory volume in use by %s, and a copy of it while containers write is not consistent; "+
			"take a snapshot of it (volume snapshot create --live %s SNAP) and name that (cloneOf: %s@SNAP)",
			ErrInUse, src.Volume, strings.Join(users, ", "), src.Volume, src.Volume))
	}
	v.UID, v.GID, v.Mode = sv.UID, sv.GID, sv.Mode
	v.Mountpoint = s.mountpoint(ns, name)
	tmp := tmpPrefix + name + "-" + randomSuffix()
	if err := unix.Mkdirat(nsFd, tmp, 0o700); err != nil {
		return volumeError(ns, name, err)
	}
	err := s.fillNew(nsFd, tmp, v, durable, fillEmpty)
	if err == nil {
		err = markClonePending(nsFd, tmp, src, durable)
	}
	if err == nil {
		err = s.nameLocked(nsFd, tmp, nsFd, v, durable)
	}
	if err != nil {
		removeAllAt(nsFd, tmp, s.dev)
		return fail(err)
	}
	v.ClonePending = src.String()
	if durable {
		return unix.Fsync(nsFd)
	}
	return nil
}

func markClonePending(nsFd int, tmp string, src CloneSource, durable bool) error {
	fd, err := fsx.OpenDir(nsFd, tmp)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return createFileAt(fd, clonePending, []byte(src.String()), durable)
}

// parseCloneSource parses NAME or NAME@SNAP as clonePending holds it.
func parseCloneSource(s string) (CloneSource, error) {
	name, snap, _ := strings.Cut(s, "@")
	src := CloneSource{Volume: name, Snapshot: snap}
	if err := ValidateName(name); err != nil {
		return src, fmt.Errorf("%w: %s names no volume: %w", errBroken, clonePending, err)
	}
	if snap != "" {
		if err := ValidateSnapshotName(snap); err != nil {
			return src, fmt.Errorf("%w: %s names no snapshot: %w", errBroken, clonePending, err)
		}
	}
	return src, nil
}

// FillClone fills volume name of namespace ns if it is a clone still to
// be copied from its source: as Copy does, with the source's data (the
// volume's _data or its snapshot's) copied within limits, owners as they
// are. pending says it was such a clone; stats what the copy wrote, also
// when it failed part-way. A volume that is no pending clone is left to
// Copy.
func (cu CopyUps) FillClone(ns, name string, limits copyup.Options) (stats copyup.Stats, pending bool, err error) {
	s := cu.s
	nsFd, volFd, err := s.openVolume(ns, name)
	if err != nil {
		return stats, false, err
	}
	unix.Close(nsFd)
	from, err := readClonePending(volFd)
	unix.Close(volFd)
	if err != nil || from == "" {
		return stats, false, volumeErrorIf(ns, name, err)
	}
	src, err := parseCloneSource(from)
	if err != nil {
		return stats, true, volumeError(ns, name, err)
	}
	limits.Owners, limits.KeepEmptyRoot = nil, false
	copied := false
	err = cu.Copy(ns, name, func(dir string) error {
		copied = true
		srcFd, done, err := s.openCloneSource(ns, src)
		if err != nil {
			return err
		}
		defer done()
		stats, err = copyup.Copy(fsx.ProcPath(srcFd), "/", dir, limits)
		if err == nil && src.Snapshot == "" && s.sourceMounted(ns, src.Volume) {
			// A sized source at rest that a container took up
			// meanwhile changed under the copy: it is thrown away.
			err = fmt.Errorf("cloneOf %q: %w: a container started using it during the copy; "+
				"take a snapshot of it and name that (cloneOf: %s@SNAP)", src, ErrInUse, src.Volume)
		}
		return err
	})
	if err != nil {
		return stats, true, err
	}
	if copied {
		recordClone(s.copyUps, snapfs.SparseCopy)
	}
	// Done, or done before: the marker has no more to say.
	nsFd, volFd, err = s.openVolume(ns, name)
	if err == nil {
		unix.Close(nsFd)
		err = unix.Unlinkat(volFd, clonePending, 0)
		unix.Close(volFd)
		if errors.Is(err, unix.ENOENT) {
			err = nil
		}
	}
	return stats, true, volumeErrorIf(ns, name, err)
}

// openCloneSource opens the data to copy for a clone of src in namespace
// ns, under the source volume's shared lock, so that no restore or
// snapshot removal changes it meanwhile; done lets it go.
func (s *Store) openCloneSource(ns string, src CloneSource) (int, func(), error) {
	sv, err := s.Get(ns, src.Volume)
	if err != nil {
		return -1, nil, fmt.Errorf("cloneOf %q: %w", src, err)
	}
	how := unix.LOCK_SH
	if sv.Backend == BackendImage {
		// Its image is mounted read-write to be read: by one at a time.
		how = unix.LOCK_EX
	}
	volFd, err := s.lockVolume(ns, src.Volume, how)
	if err != nil {
		return -1, nil, fmt.Errorf("cloneOf %q: %w", src, err)
	}
	if sv.Backend == BackendImage {
		fd, done, err := s.mountCloneSource(volFd, src)
		if err != nil {
			unix.Close(volFd)
			return -1, nil, fmt.Errorf("cloneOf %q: %w", src, err)
		}
		return fd, func() { done(); unix.Close(volFd) }, nil
	}
	dir := dataDir
	if src.Snapshot != "" {
		dir = snapshotsDir + "/" + src.Snapshot + "/" + dataDir
	}
	fd, err := fsx.OpenDir(volFd, dir)
	if err != nil {
		unix.Close(volFd)
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNotFound
		}
		return -1, nil, fmt.Errorf("cloneOf %q: %w", src, err)
	}
	return fd, func() { unix.Close(fd); unix.Close(volFd) }, nil
}

func volumeErrorIf(ns, name string, err error) error {
	if err == nil {
		return nil
	}
	return volumeError(ns, name, err)
}
