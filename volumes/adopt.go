package volumes

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// AdoptLimits bound the tree CopyUps.Adopt takes over.
type AdoptLimits struct {
	// MaxEntries bounds the entries it counts (and the time the count
	// takes); a larger tree is not adopted.
	MaxEntries int64
	// MaxBytes bounds the apparent size of the regular files, as copy-up's
	// limits do; 0 is no bound, a negative value allows no bytes at all.
	MaxBytes int64
}

// Adopt fills the new volume ns/name with a copy of the image's
// content that the runtime made already: containerd copies each VOLUME of
// an image into a directory of its own before NRI's CreateContainer, and
// the plugin's mount then hides it. Rather than copy the image a second
// time, the directory dirName below the directory open at parent becomes
// the volume's _data: an atomic exchange (renameat2 RENAME_EXCHANGE) leaves
// the volume's empty _data where the runtime's directory was, for the
// runtime to remove with the container.
//
// It takes over only what the copy-up hook would have made the same way: a
// volume with no copy-up marker, an empty _data on the volume's own file
// system (not a sized volume's mount), and a tree on that same file system
// within lim that holds nothing but directories, regular files and symlinks.
// Otherwise, and when the volume's lock is held elsewhere, it changes
// nothing and returns an error wrapping ErrNotAdopted. It never waits. An
// adopted volume is marked copied up, as the hook marks the volumes it fills.
func (cu CopyUps) Adopt(ns, name string, parent int, dirName string, lim AdoptLimits) (fsx.Tally, error) {
	s := cu.s
	notAdopted := func(why string, args ...any) (fsx.Tally, error) {
		return fsx.Tally{}, fmt.Errorf("volume %s/%s: %w: %s", ns, name, ErrNotAdopted, fmt.Sprintf(why, args...))
	}
	volFd, dataFd, err := s.openData(ns, name, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return notAdopted("its lock is held")
	}
	if err != nil {
		return fsx.Tally{}, err
	}
	defer unix.Close(volFd)
	defer unix.Close(dataFd)
	if state, err := copyUpState(volFd); err != nil {
		return fsx.Tally{}, volumeError(ns, name, err)
	} else if state != "" {
		return notAdopted("it has a copy-up marker (%s)", state)
	}
	vol, err := fsx.Fstat(volFd)
	if err != nil {
		return fsx.Tally{}, volumeError(ns, name, err)
	}
	data, err := fsx.Fstat(dataFd)
	if err != nil {
		return fsx.Tally{}, volumeError(ns, name, err)
	}
	if data.Dev != vol.Dev {
		return notAdopted("its %s is a mount of its own", dataDir)
	}
	if empty, err := fsx.IsEmptyDir(dataFd); err != nil || !empty {
		if err != nil {
			return fsx.Tally{}, volumeError(ns, name, err)
		}
		return notAdopted("it holds data")
	}
	srcFd, err := fsx.OpenDir(parent, dirName)
	if err != nil {
		return notAdopted("opening %s: %v", dirName, err)
	}
	defer unix.Close(srcFd)
	src, err := fsx.Fstat(srcFd)
	if err != nil {
		return fsx.Tally{}, err
	}
	if src.Dev != vol.Dev {
		return notAdopted("%s is on another file system than the store", dirName)
	}
	t, err := fsx.Count(srcFd, src.Dev, lim.MaxEntries)
	if err != nil {
		return notAdopted("%v", err)
	}
	if lim.MaxBytes < 0 && t.Bytes > 0 || lim.MaxBytes > 0 && t.Bytes > lim.MaxBytes {
		return notAdopted("it holds %d bytes, more than %d", t.Bytes, max(lim.MaxBytes, 0))
	}
	// The tree was counted through srcFd: exchange that very directory.
	if cur, err := fsx.Lstat(parent, dirName); err != nil || cur.Dev != src.Dev || cur.Ino != src.Ino {
		return notAdopted("%s changed while it was counted", dirName)
	}
	if err := unix.Renameat2(parent, dirName, volFd, dataDir, unix.RENAME_EXCHANGE); err != nil {
		return notAdopted("exchanging it with %s: %v", dataDir, err)
	}
	// The marker only spares later containers the hook, so it needs no
	// sync, and failing to make it is no failure: without it, the next
	// container finds _data full, or copies an empty image directory again.
	_ = touchAt(volFd, copyUpDone)
	return t, nil
}
