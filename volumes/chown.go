package volumes

import (
	"encoding/json"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// ChownRoot gives the root of volume name in namespace ns, its _data, to
// uid:gid, the first time it is asked (the U option: the container's user
// gets the volume it mounts), and records that in volume.json; later calls
// change nothing and report false. It holds the lock of that volume alone,
// as Copy does, so a copy-up of the same volume finishes first.
func (cu CopyUps) ChownRoot(ns, name string, uid, gid int) (bool, error) {
	s := cu.s
	if err := (CreateOptions{UID: &uid, GID: &gid}).validate(); err != nil {
		return false, volumeError(ns, name, err)
	}
	volFd, err := s.lockVolume(ns, name, unix.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer unix.Close(volFd)
	// The record is read and rewritten whole: volume.json may hold fields
	// of a newer version, which the rewrite keeps.
	raw, err := fsx.ReadFile(volFd, metaFile, maxMetaSize)
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
	dataFd, err := fsx.OpenDir(volFd, dataDir)
	if err != nil {
		return false, publicError(ns, name, fmt.Errorf("%w: %w", errBroken, err))
	}
	defer unix.Close(dataFd)
	st, err := fsx.Fstat(dataFd)
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
	if err := replaceFileAt(volFd, metaFile, append(data, '\n'), true); err != nil {
		return false, volumeError(ns, name, err)
	}
	return true, nil
}
