package volumes

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// importHold is an import's hold on its volume: the marker, locked.
type importHold struct {
	volFd, fd int
	// cutShort: the marker was there, left by an import killed part-way.
	cutShort bool
}

// holdImport makes and locks the import marker in the volume directory open
// at volFd, under the store's lock, which Acquire takes too. The caller
// holds the volume's own lock, so no other import runs.
func holdImport(volFd int) (*importHold, error) {
	h := &importHold{volFd: volFd}
	fd, err := unix.Openat(volFd, importMarker, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) {
		h.cutShort = true
		fd, err = unix.Openat(volFd, importMarker, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("import marker: %w", err)
	}
	h.fd = fd
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("import marker: %w", err)
	}
	// A crash must not lose the marker while partial data stays.
	if err := unix.Fsync(volFd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("import marker: %w", err)
	}
	return h, nil
}

// release removes the marker, under the store's lock: an Acquire finds it
// locked or finds none, never one that is unlocked but for a moment.
func (h *importHold) release() error {
	defer unix.Close(h.fd)
	if err := unix.Unlinkat(h.volFd, importMarker, 0); err != nil {
		return fmt.Errorf("import marker: %w", err)
	}
	return nil
}

// Import states of a volume, as its marker shows them.
const (
	importNone = iota
	importFilling
	importCutShort
)

// importState reads the import marker of volume name in namespace ns of
// the store's directory open at dirFd: one openat for a volume without one.
func importState(dirFd int, ns, name string) (int, error) {
	fd, err := fsx.OpenBeneath(dirFd, ns+"/"+name+"/"+importMarker, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return importNone, nil
	}
	if err != nil {
		return importNone, fmt.Errorf("import marker: %w", err)
	}
	defer unix.Close(fd)
	err = unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)
	switch {
	case errors.Is(err, unix.EWOULDBLOCK):
		return importFilling, nil
	case err != nil:
		return importNone, fmt.Errorf("import marker: %w", err)
	}
	return importCutShort, nil
}

// errImportCutShort says what a volume that an import left partial needs.
const errImportCutShort = "an import into it was cut short and its data is partial; run \"volume import\" again or \"volume rm\" it"

// importRunning refuses volume name in namespace ns of the store's
// directory open at dirFd for a container while an import fills it or after
// one was cut short. The caller holds the store's lock, which an import
// takes to make and remove its marker.
func importRunning(dirFd int, ns, name string) error {
	state, err := importState(dirFd, ns, name)
	switch {
	case err != nil:
		return volumeError(ns, name, err)
	case state == importFilling:
		return volumeError(ns, name, fmt.Errorf("%w: an import is filling it; start the container once \"volume import\" ends", ErrInUse))
	case state == importCutShort:
		return volumeError(ns, name, fmt.Errorf("%w: %s", ErrInUse, errImportCutShort))
	}
	return nil
}
