package volumes

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Snapshot is a snapshot as the store shows it, and what snapshot.json holds.
type Snapshot struct {
	Name      string    `json:"Name"`
	Volume    string    `json:"Volume"`
	Namespace string    `json:"Namespace"`
	CreatedAt time.Time `json:"CreatedAt"`
	// Size is the size of the volume's file system for the image backend,
	// and the disk usage of the copied tree for a plain volume.
	Size    int64   `json:"Size"`
	Backend Backend `json:"Backend,omitempty"`
	// Live says the snapshot copied a plain volume while containers used
	// it: it is not crash-consistent.
	Live bool `json:"Live,omitempty"`
	// Copy says how the data was copied: "reflink" (O(1)) or "copy".
	Copy snapfs.Method `json:"Copy"`
	// Frozen is how long the volume's file system was frozen, writers
	// blocked, for the image backend.
	Frozen time.Duration `json:"Frozen,omitempty"`
}

// ValidateSnapshotName reports whether snap may name a snapshot: the rules
// of volume names. The error wraps ErrInvalid.
func ValidateSnapshotName(snap string) error {
	if reason := checkName(snap, maxNameLen); reason != "" {
		return fmt.Errorf("snapshot name %q: %w: %s", snap, ErrInvalid, reason)
	}
	return nil
}

func snapshotError(ns, name, snap string, err error) error {
	return volumeError(ns, name, fmt.Errorf("snapshot %q: %w", snap, err))
}

// openSnapshots opens, making it if missing, the snapshots directory of the
// volume directory open at volFd, and removes the temporary entries a
// process that died left there; the caller holds the volume's flock
// exclusively.
func openSnapshots(volFd int) (int, error) {
	fd, err := ensureDirAt(volFd, snapshotsDir)
	if err != nil {
		return -1, err
	}
	names, err := fsx.ReadDirNames(fd)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	st, err := fsx.Fstat(fd)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	for _, n := range names {
		if strings.HasPrefix(n, tmpPrefix) {
			// An export's snapshot may still be mounted there.
			sizer.Unmount(fsx.ProcPath(fd) + "/" + n + "/" + exportMount)
			_ = removeAllAt(fd, n, st.Dev)
		}
	}
	return fd, nil
}

// createImage creates the empty disk.img in the directory open at dir.
func createImage(dir int) (int, error) {
	fd, err := unix.Openat(dir, imageFile, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, &os.PathError{Op: "openat", Path: imageFile, Err: err}
	}
	return fd, nil
}

// cloneImageAt clones the disk.img of the directory open at srcDir into the
// directory open at dstDir, durably.
func cloneImageAt(srcDir, dstDir int) (snapfs.Method, error) {
	src, err := unix.Openat(srcDir, imageFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "openat", Path: imageFile, Err: err}
	}
	defer unix.Close(src)
	dst, err := createImage(dstDir)
	if err != nil {
		return "", err
	}
	defer unix.Close(dst)
	m, err := snapfs.CloneFile(dst, src)
	if err != nil {
		return "", err
	}
	return m, unix.Fsync(dst)
}

// readSnapshot reads snapshot snap of a volume, whose snapshots directory
// is open at snapsFd. Its name, volume and namespace are the ones asked
// for, never taken from the file.
func readSnapshot(snapsFd int, ns, name, snap string) (*Snapshot, error) {
	data, err := fsx.ReadFile(snapsFd, snap+"/"+snapshotMeta, maxMetaSize)
	if err != nil {
		return nil, err
	}
	var sn Snapshot
	if err := json.Unmarshal(data, &sn); err != nil {
		return nil, fmt.Errorf("%w: bad %s: %w", errBroken, snapshotMeta, err)
	}
	sn.Name, sn.Volume, sn.Namespace = snap, name, ns
	return &sn, nil
}

// snapshotsAt is how many snapshots volume name, in the namespace open at
// nsFd, has, and what they hold on disk: the blocks of each image (shared
// extents included, as the snapshot keeps them once the volume changes),
// or the disk usage recorded for each plain copy.
func snapshotsAt(nsFd int, name string) SizeSum {
	var sum SizeSum
	snapsFd, err := fsx.OpenDir(nsFd, name+"/"+snapshotsDir)
	if err != nil {
		return sum
	}
	defer unix.Close(snapsFd)
	snaps, err := fsx.ReadDirNames(snapsFd)
	if err != nil {
		return sum
	}
	for _, snap := range snaps {
		if ValidateSnapshotName(snap) == nil {
			sum.Bytes += snapshotHolds(snapsFd, name, snap)
			sum.Count++
		}
	}
	return sum
}

// snapshotHolds is what snapshot snap, in the snapshots directory open at
// snapsFd, holds, as snapshotsAt counts it.
func snapshotHolds(snapsFd int, name, snap string) int64 {
	if st, err := fsx.Lstat(snapsFd, snap+"/"+imageFile); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		return st.Blocks * 512
	}
	if sn, err := readSnapshot(snapsFd, "", name, snap); err == nil {
		return sn.Size
	}
	return 0
}
