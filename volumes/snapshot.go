package volumes

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/copyup"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Snapshots. A snapshot is a point-in-time copy of a volume's data, kept in
// the volume's directory: ROOT/volumes/NS/NAME/snapshots/SNAP/ holds
// snapshot.json and the data, a disk.img for the image backend or a _data
// tree for a plain directory volume. It goes with its volume: volume rm
// removes it, and prune, which only removes whole volumes, never removes a
// snapshot of a volume it keeps.
//
//   - image backend: the volume's file system is frozen (FIFREEZE, see
//     freeze.go) for the moment its disk.img is cloned, so the copy is what a
//     crash at that instant would have left, and consistent: a reflink
//     (FICLONE) in O(1) where the host file system shares extents (xfs with
//     reflink=1, btrfs), otherwise a copy of the image's data extents.
//   - plain directory: nothing can freeze it, so a snapshot of one in use is
//     refused unless asked for Live, which copies the tree while containers
//     write (not crash-consistent). Files are reflinked where the file system
//     can (copy_file_range shares extents on xfs and btrfs).
//
// The work happens under the volume's own flock, held exclusively, never
// under the store's lock, so a slow copy holds up no NRI request; it is
// built under a temporary name in the snapshots directory and renamed into
// place once durable. Temporary entries there are removed by the next
// operation that takes the volume's flock.
//
// The snapshots live in snapshotsDir.
const (
	// SnapshotTimeFormat is the default name of a snapshot: the UTC time it
	// was taken, such as 20261206T205800Z.
	SnapshotTimeFormat = "20060102T150405Z"
)

// SnapshotOptions are the options of Snapshots.Create.
type SnapshotOptions struct {
	// Live allows a snapshot of a plain directory volume that containers
	// use; without it such a snapshot is refused with ErrInUse.
	Live bool
}

// heldVolume is a volume held for a copy of its data: its flock taken, its
// own file system (if sized) brought up at _data.
type heldVolume struct {
	v             *Volume
	volFd, dataFd int
	done          func()
}

func (h *heldVolume) release() {
	unix.Close(h.dataFd)
	unix.Close(h.volFd)
	h.done()
}

// holdVolume takes the flock of volume name of namespace ns (how: LOCK_EX
// or LOCK_SH) and opens its _data, with a sized volume's file system brought
// up there for the time it is held.
func (s *Store) holdVolume(ns, name string, how int) (*heldVolume, error) {
	for try := 0; ; try++ {
		v, err := s.Get(ns, name)
		if err != nil {
			return nil, err
		}
		done, err := s.activeData(ns, name)
		if err != nil {
			return nil, err
		}
		volFd, dataFd, err := s.openData(ns, name, how)
		if err != nil {
			done()
			return nil, err
		}
		h := &heldVolume{v: v, volFd: volFd, dataFd: dataFd, done: done}
		// The last container's release may take the file system down
		// between activeData and the open: then again.
		if v.Limit == 0 || dataIsMount(volFd, dataFd) {
			return h, nil
		}
		h.release()
		if try == 3 {
			return nil, volumeError(ns, name, fmt.Errorf("%w: its file system keeps going down", ErrInUse))
		}
	}
}

// Create takes the snapshot snap (a UTC time stamp when empty) of
// volume name in namespace ns. A plain directory volume that a container
// uses is refused with ErrInUse unless opts.Live. A snapshot that exists
// already gives ErrExists. Nothing is left behind by a failure.
func (ss Snapshots) Create(ns, name, snap string, opts SnapshotOptions) (*Snapshot, error) {
	s := ss.s
	if snap == "" {
		snap = time.Now().UTC().Format(SnapshotTimeFormat)
	}
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := ValidateSnapshotName(snap); err != nil {
		return nil, volumeError(ns, name, err)
	}
	h, err := s.holdVolume(ns, name, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer h.release()
	sn := &Snapshot{Name: snap, Volume: name, Namespace: ns, Backend: h.v.Backend}
	if err := s.checkCopyable(h.v, opts.Live, "a snapshot", &sn.Live); err != nil {
		return nil, err
	}
	est, err := s.snapshotEstimate(h)
	if err != nil {
		return nil, snapshotError(ns, name, snap, err)
	}
	if err := s.chargeSnapshot(h, snap, est); err != nil {
		return nil, err
	}
	held, made := int64(0), int64(0)
	defer func() { s.settleSnapshot(ns, est, held, made) }()
	snapsFd, err := openSnapshots(h.volFd)
	if err != nil {
		return nil, volumeError(ns, name, err)
	}
	defer unix.Close(snapsFd)
	if exists, err := existsAt(snapsFd, snap); err != nil || exists {
		if err == nil {
			err = ErrExists
		}
		return nil, snapshotError(ns, name, snap, err)
	}
	tmp := tmpPrefix + snap + "-" + randomSuffix()
	if err := s.fillSnapshot(h, snapsFd, tmp, sn); err != nil {
		_ = removeAllAt(snapsFd, tmp, s.dev)
		return nil, snapshotError(ns, name, snap, err)
	}
	if err := renameNoReplace(snapsFd, tmp, snapsFd, snap); err != nil {
		_ = removeAllAt(snapsFd, tmp, s.dev)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			err = ErrExists
		}
		return nil, snapshotError(ns, name, snap, err)
	}
	held, made = snapshotHolds(snapsFd, name, snap), 1
	if err := unix.Fsync(snapsFd); err != nil {
		return nil, snapshotError(ns, name, snap, err)
	}
	return sn, nil
}

// checkCopyable refuses a copy (what: "a snapshot", "a clone") of the
// plain volume v while a container uses it, unless live; live is set when
// the copy is taken in use. A btrfs volume has no snapshots yet.
func (s *Store) checkCopyable(v *Volume, live bool, what string, taken *bool) error {
	switch v.Backend {
	case BackendImage:
		return nil
	case BackendBtrfs:
		return volumeError(v.Namespace, v.Name, fmt.Errorf("%w: %s of a btrfs volume is not supported yet; use the image backend (sizes.backend: image)", ErrInvalid, what))
	}
	var users []string
	if err := s.withLock(unix.LOCK_SH, func() error {
		users = s.idx.usedBy(v.key())
		return nil
	}); err != nil {
		return err
	}
	if len(users) == 0 {
		return nil
	}
	if !live {
		return &OpError{Namespace: v.Namespace, Name: v.Name, Refs: users, Err: fmt.Errorf(
			"%w: refused %s: a plain directory volume cannot be frozen, so a copy taken while containers write is not consistent; "+
				"give the volume a size (the image backend freezes it), or pass --live for a copy that is not crash-consistent; it is used", ErrInUse, what)}
	}
	*taken = true
	return nil
}

// fillSnapshot makes the snapshot sn of the held volume in the new
// directory tmp of the snapshots directory open at snapsFd: its data, then
// its snapshot.json, all durable.
func (s *Store) fillSnapshot(h *heldVolume, snapsFd int, tmp string, sn *Snapshot) error {
	if err := unix.Mkdirat(snapsFd, tmp, 0o700); err != nil {
		return &os.PathError{Op: "mkdirat", Path: tmp, Err: err}
	}
	fd, err := fsx.OpenDir(snapsFd, tmp)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sn.CreatedAt = time.Now().UTC().Truncate(time.Second)
	if h.v.Limit > 0 {
		sn.Size = h.v.Limit
		sn.Copy, sn.Frozen, err = s.cloneLiveImage(h, fd)
	} else {
		sn.Copy, sn.Size, err = copyTree(h.dataFd, fd, filepath.Join(s.dir, h.v.Namespace, h.v.Name, snapshotsDir, tmp))
	}
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(sn, "", "  ")
	if err != nil {
		return err
	}
	return createFileAt(fd, snapshotMeta, append(data, '\n'), true)
}

// cloneLiveImage clones the held image volume's disk.img into the directory
// open at dstDir, with its file system frozen for the clone alone, and
// fsyncs the clone once thawed.
func (s *Store) cloneLiveImage(h *heldVolume, dstDir int) (snapfs.Method, time.Duration, error) {
	src, err := unix.Openat(h.volFd, imageFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %w", errBroken, &os.PathError{Op: "openat", Path: imageFile, Err: err})
	}
	defer unix.Close(src)
	dst, err := createImage(dstDir)
	if err != nil {
		return "", 0, err
	}
	defer unix.Close(dst)
	// Dirty data is written back while writers still run, so the freeze,
	// which writes back what is left, blocks them for less.
	if err := unix.Syncfs(h.dataFd); err != nil {
		return "", 0, fmt.Errorf("syncfs: %w", err)
	}
	start := time.Now()
	thaw, err := s.freezeData(h.v.Namespace, h.v.Name, h.dataFd)
	if err != nil {
		return "", 0, err
	}
	thawed := false
	defer func() {
		// Even on a panic: a frozen file system hangs the node's writers.
		if !thawed {
			_ = thaw()
		}
	}()
	m, err := snapfs.CloneFile(dst, src)
	frozen := time.Since(start)
	thawed = true
	if terr := thaw(); terr != nil {
		err = errors.Join(err, terr)
	}
	recordFreeze(s.copyUps, frozen)
	if err != nil {
		return "", 0, err
	}
	return m, frozen, unix.Fsync(dst)
}

// copyTree copies the tree of the directory open at srcFd into a new _data
// in the directory open at dstDir, whose path is dstPath: owners, modes,
// times, xattrs, symlinks as links, hard links, holes; regular files are
// reflinked where the file system can. It returns how, and the disk usage
// of the copy.
func copyTree(srcFd, dstDir int, dstPath string) (snapfs.Method, int64, error) {
	if err := sizer.MkdirData(dstDir); err != nil {
		return "", 0, err
	}
	// The source is named through its descriptor: the very directory held.
	if _, err := copyup.Copy(fsx.ProcPath(srcFd), "/", filepath.Join(dstPath, dataDir), copyup.Options{}); err != nil {
		return "", 0, err
	}
	fd, err := fsx.OpenDir(dstDir, dataDir)
	if err != nil {
		return "", 0, err
	}
	defer unix.Close(fd)
	if err := syncTree(fd); err != nil {
		return "", 0, err
	}
	st, err := fsx.Fstat(fd)
	if err != nil {
		return "", 0, err
	}
	size, err := fsx.DiskUsage(fd, st.Dev)
	if err != nil {
		return "", 0, err
	}
	return treeMethod(srcFd, fd), size, nil
}

// syncTree makes the copied tree at fd durable: syncfs of its file system,
// one call instead of an fsync per file.
func syncTree(fd int) error {
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}

// treeMethod says how copy_file_range copied between the file systems of
// two directories: by sharing extents on one that can clone (probed: an xfs
// made without reflink=1 cannot, whatever its type says).
func treeMethod(srcFd, dstFd int) snapfs.Method {
	a, errA := fsx.Fstat(srcFd)
	b, errB := fsx.Fstat(dstFd)
	if errA != nil || errB != nil || a.Dev != b.Dev || !snapfs.ProbeReflink(dstFd) {
		return snapfs.SparseCopy
	}
	return snapfs.Reflink
}

// List returns the snapshots of volume name of namespace ns, or of
// every volume of ns when name is empty, sorted by volume, time and name. It
// reads without the store's lock: a snapshot appears complete under its
// name.
func (ss Snapshots) List(ns, name string) ([]*Snapshot, error) {
	s := ss.s
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	names := []string{name}
	if name == "" {
		var err error
		if names, err = s.namesIn(ns); err != nil {
			return nil, err
		}
	} else if _, err := s.Get(ns, name); err != nil {
		return nil, err
	}
	var out []*Snapshot
	for _, n := range names {
		snaps, err := s.snapshotsOf(ns, n)
		if err != nil {
			return nil, err
		}
		out = append(out, snaps...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Volume != b.Volume {
			return a.Volume < b.Volume
		}
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		return a.Name < b.Name
	})
	return out, nil
}

func (s *Store) snapshotsOf(ns, name string) ([]*Snapshot, error) {
	nsFd, volFd, err := s.openVolume(ns, name)
	if err != nil {
		return nil, err
	}
	unix.Close(nsFd)
	defer unix.Close(volFd)
	snapsFd, err := fsx.OpenDir(volFd, snapshotsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, volumeError(ns, name, err)
	}
	defer unix.Close(snapsFd)
	snaps, err := fsx.ReadDirNames(snapsFd)
	if err != nil {
		return nil, volumeError(ns, name, err)
	}
	var out []*Snapshot
	for _, snap := range snaps {
		if ValidateSnapshotName(snap) != nil {
			continue
		}
		if sn, err := readSnapshot(snapsFd, ns, name, snap); err == nil {
			out = append(out, sn)
		}
	}
	return out, nil
}

// Remove removes snapshot snap of volume name in namespace ns. It
// waits for a snapshot, clone or restore of the volume that runs.
func (ss Snapshots) Remove(ns, name, snap string) error {
	s := ss.s
	if err := ValidateSnapshotName(snap); err != nil {
		return volumeError(ns, name, err)
	}
	volFd, err := s.lockVolume(ns, name, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unix.Close(volFd)
	snapsFd, err := openSnapshots(volFd)
	if err != nil {
		return volumeError(ns, name, err)
	}
	defer unix.Close(snapsFd)
	if _, err := readSnapshot(snapsFd, ns, name, snap); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNotFound
		}
		return snapshotError(ns, name, snap, err)
	}
	held := snapshotHolds(snapsFd, name, snap)
	tmp := tmpPrefix + snap + "-" + randomSuffix()
	if err := unix.Renameat(snapsFd, snap, snapsFd, tmp); err != nil {
		return snapshotError(ns, name, snap, err)
	}
	// Refunded after it left its name: see ledger.go.
	s.settleSnapshot(ns, held, 0, -1)
	if err := unix.Fsync(snapsFd); err != nil {
		return snapshotError(ns, name, snap, err)
	}
	if err := removeAllAt(snapsFd, tmp, s.dev); err != nil {
		return snapshotError(ns, name, snap, fmt.Errorf("removed, but deleting its data failed: %w", err))
	}
	return nil
}

// openSnapshot locks volume name of namespace ns (how), and opens its
// snapshots directory and reads snapshot snap from it, which must exist.
// The caller closes both descriptors; the lock goes with volFd.
func (s *Store) openSnapshot(ns, name, snap string, how int) (sn *Snapshot, volFd, snapsFd int, err error) {
	if err := ValidateSnapshotName(snap); err != nil {
		return nil, -1, -1, volumeError(ns, name, err)
	}
	volFd, err = s.lockVolume(ns, name, how)
	if err != nil {
		return nil, -1, -1, err
	}
	snapsFd, err = fsx.OpenDir(volFd, snapshotsDir)
	if err == nil {
		sn, err = readSnapshot(snapsFd, ns, name, snap)
		if err != nil {
			unix.Close(snapsFd)
		}
	}
	if err != nil {
		unix.Close(volFd)
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNotFound
		}
		return nil, -1, -1, snapshotError(ns, name, snap, err)
	}
	return sn, volFd, snapsFd, nil
}

// chargeSnapshot charges est bytes, what a snapshot of the held volume
// will about hold, to its namespace in the ledger, refusing it when that
// takes the namespace over limits.namespaceBytes: O(1). Charged before the
// snapshot exists, so a crash leaves a charge too many, never one too few;
// settleSnapshot corrects it once the snapshot's blocks are known.
func (s *Store) chargeSnapshot(h *heldVolume, snap string, est int64) error {
	ns, name := h.v.Namespace, h.v.Name
	return s.withLock(unix.LOCK_EX, func() error {
		if max := s.policy.NamespaceBytes; max > 0 {
			sum := s.idx.sizes.namespaceBytes(ns)
			if sum+est > max {
				return snapshotError(ns, name, snap, fmt.Errorf("%w: holding about %s, it would bring namespace %q to %s, above limits.namespaceBytes %s (%s in use by its volumes and snapshots)",
					ErrLimit, FormatBytes(est), ns, FormatBytes(sum+est), FormatBytes(max), FormatBytes(sum)))
			}
		}
		return s.chargeSnapshotsLocked(ns, est, 0)
	})
}

// settleSnapshot changes namespace ns's charge for a snapshot from est to
// what it holds, held (0 when it was not made), and its count of snapshots
// by count (1 for one made, -1 for one removed); best effort: a failure
// leaves the estimate, which Check reports.
func (s *Store) settleSnapshot(ns string, est, held, count int64) {
	if est == held && count == 0 {
		return
	}
	_ = s.withLock(unix.LOCK_EX, func() error { return s.chargeSnapshotsLocked(ns, held-est, count) })
}

// snapshotEstimate is about what a snapshot of the held volume will hold:
// the blocks of its image, or the disk usage of its data; measured only
// when a namespace budget is set.
func (s *Store) snapshotEstimate(h *heldVolume) (int64, error) {
	if s.policy.NamespaceBytes <= 0 {
		return 0, nil
	}
	if h.v.Limit > 0 {
		st, err := fsx.Lstat(h.volFd, imageFile)
		return st.Blocks * 512, err
	}
	st, err := fsx.Fstat(h.dataFd)
	if err != nil {
		return 0, err
	}
	return fsx.DiskUsage(h.dataFd, st.Dev)
}

// dataIsMount reports whether dataFd, _data opened below the volume
// directory volFd, is a file system of its own: checked on the descriptor
// held, not on the path, which an unmount may have changed since the open.
func dataIsMount(volFd, dataFd int) bool {
	v, err := fsx.Fstat(volFd)
	if err != nil {
		return false
	}
	d, err := fsx.Fstat(dataFd)
	return err == nil && d.Dev != v.Dev
}

// Count is how many snapshots volume name of namespace ns has, for the
// message of its removal.
func (ss Snapshots) Count(ns, name string) (int, error) {
	snaps, err := ss.s.snapshotsOf(ns, name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return len(snaps), err
}

// Sums returns, per namespace, the bytes its snapshots hold and their
// number, from the ledger: O(namespaces), without a look at any snapshot.
func (ss Snapshots) Sums() (map[string]SizeSum, error) {
	s := ss.s
	var per map[string]SizeSum
	err := s.withLock(unix.LOCK_SH, func() error {
		per = make(map[string]SizeSum, len(s.idx.sizes.snaps))
		for ns, sum := range s.idx.sizes.snaps {
			per[ns] = sum
		}
		return nil
	})
	return per, err
}
