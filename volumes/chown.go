package volumes

import (
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ChownRoot gives the root of volume name in namespace ns, its _data, to
// uid:gid, the first time it is asked (the U option: the container's user
// gets the volume it mounts), and records that in volume.json; later calls
// change nothing and report false. It holds the lock of that volume alone,
// as CopyUp does, so a copy-up of the same volume finishes first.
func (s *Store) ChownRoot(ns, name string, uid, gid int) (bool, error) {
	if err := ValidateNamespace(ns); err != nil {
		return false, err
	}
	if err := ValidateName(name); err != nil {
		return false, err
	}
	if err := (CreateOptions{UID: &uid, GID: &gid}).validate(); err != nil {
		return false, volumeError(ns, name, err)
	}
	nsFd, err := s.openNamespace(ns)
	if err != nil {
		return false, publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	volFd, err := s.lockVolume(nsFd, ns, name)
	if err != nil {
		return false, err
	}
	defer unix.Close(volFd)
	// The record is read and rewritten whole: volume.json may hold fields
	// of a newer version, which the rewrite keeps.
	raw, err := readFileAt(volFd, metaFile, maxMetaSize)
	if err != nil {
		return false, publicError(ns, name, fmt.Errorf("%w: no readable %s: %w", errBroken, metaFile, err))
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rec); err != nil {
		return false, publicError(ns, name, fmt.Errorf("%w: bad %s: %w", errBroken, metaFile, err))
	}
	if c, ok := rec["Chowned"]; ok && string(c) != "null" {
		return false, nil
	}
	dataFd, err := openDir(volFd, dataDir)
	if err != nil {
		return false, publicError(ns, name, fmt.Errorf("%w: %w", errBroken, err))
	}
	defer unix.Close(dataFd)
	st, err := fstat(dataFd)
	if err != nil {
		return false, volumeError(ns, name, err)
	}
	if err := unix.Fchown(dataFd, uid, gid); err != nil {
		return false, volumeError(ns, name, fmt.Errorf("chown %s: %w", dataDir, err))
	}
	// Whatever chown does to the set-id bits, the volume keeps its mode.
	if err := unix.Fchmod(dataFd, st.Mode&0o7777); err != nil {
		return false, volumeError(ns, name, err)
	}
	chowned, err := json.Marshal(IDs{UID: uid, GID: gid})
	if err != nil {
		return false, volumeError(ns, name, err)
	}
	rec["Chowned"] = chowned
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return false, volumeError(ns, name, err)
	}
	if err := replaceFileDurablyAt(volFd, metaFile, append(data, '\n')); err != nil {
		return false, volumeError(ns, name, err)
	}
	return true, nil
}

// keepChowned gives _data, open at dataFd, back to the user that ChownRoot
// recorded in the volume.json of the volume open at volFd, if any, keeping
// mode: a copy-up into a volume an earlier container chowned (U with
// nocopy) must not hand its root to the image directory's owner.
func keepChowned(volFd, dataFd int, mode uint32) error {
	raw, err := readFileAt(volFd, metaFile, maxMetaSize)
	if err != nil {
		return fmt.Errorf("%w: no readable %s: %w", errBroken, metaFile, err)
	}
	var rec struct{ Chowned *IDs }
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("%w: bad %s: %w", errBroken, metaFile, err)
	}
	if rec.Chowned == nil {
		return nil
	}
	if err := unix.Fchown(dataFd, rec.Chowned.UID, rec.Chowned.GID); err != nil {
		return fmt.Errorf("chown %s: %w", dataDir, err)
	}
	return unix.Fchmod(dataFd, mode&0o7777)
}

// lockVolume opens the directory of volume name below nsFd and takes its
// exclusive flock, making sure the directory locked is still the volume:
// Remove renames a volume away under this lock. The lock goes with the
// returned descriptor.
func (s *Store) lockVolume(nsFd int, ns, name string) (int, error) {
	volFd, err := openDir(nsFd, name)
	if err != nil {
		return -1, publicError(ns, name, err)
	}
	if err := flockRetry(volFd, unix.LOCK_EX); err != nil {
		unix.Close(volFd)
		return -1, volumeError(ns, name, err)
	}
	held, err := fstat(volFd)
	if err != nil {
		unix.Close(volFd)
		return -1, volumeError(ns, name, err)
	}
	cur, err := lstatAt(nsFd, name)
	if err != nil || cur.Ino != held.Ino || cur.Dev != held.Dev {
		unix.Close(volFd)
		return -1, volumeError(ns, name, ErrNotFound)
	}
	return volFd, nil
}

// replaceFileDurablyAt is replaceFileAt for state that must survive a crash
// of the node: the new content is fsynced before the rename and the
// directory after it. A crash leaves the old file or the new one.
func replaceFileDurablyAt(dir int, name string, data []byte) error {
	tmp := tmpPrefix + randomSuffix()
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: tmp, Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if rerr := unix.Renameat(dir, tmp, dir, name); rerr != nil {
			err = &os.PathError{Op: "renameat", Path: name, Err: rerr}
		}
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
		return err
	}
	if err := unix.Fsync(dir); err != nil {
		return &os.PathError{Op: "fsync", Path: ".", Err: err}
	}
	return nil
}
