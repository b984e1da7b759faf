package volumes

import (
	"os"

	"golang.org/x/sys/unix"
)

// Sync makes the named volume ns/name durable, as Create makes it: its
// volume.json, the entries of its directory and its name in the namespace.
// Acquire with Request.SyncLater leaves that to the caller, who calls Sync
// before a container uses the volume; the plugin calls it in the
// background and the copy-up hook, which runs before the container's
// process, calls it again, and finds it cheap when the background call is
// done. It takes no lock: it writes nothing, and a volume removed meanwhile
// fails it with ErrNotFound.
func (s *Store) Sync(ns, name string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	nsFd, err := s.openNamespace(ns)
	if err != nil {
		return publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	volFd, err := openDir(nsFd, name)
	if err != nil {
		return publicError(ns, name, err)
	}
	defer unix.Close(volFd)
	metaFd, err := openBeneath(volFd, metaFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC)
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
	return nil
}
