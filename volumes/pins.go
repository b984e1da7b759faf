package volumes

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/pin"
)

// Pins. runc resolves a mount's source path again when it mounts, following
// symlinks, so a path the plugin checked promises nothing about what runc
// mounts: whoever can write along the path can swap a component for a
// symlink in between. A pin closes that gap. The plugin opens the source
// without following any symlink and checks the open object; the store then
// makes a private, recursive bind mount of exactly that object at
// ROOT/pins/CONTAINER/ENTRY, a path only the store writes, and runc mounts
// the pin.
//
// ENTRY is the index of the mount among the container's mounts: "3" for a
// host path, and for a directory inside a volume the index, the volume's
// namespace and its name joined by '@' ("3@shop@logs"), a character no name
// has, so that a mount source tells which volume it uses
// (Paths.VolumeForMountSource).
//
// A pin lives as long as its container: Pins.Remove removes them when the
// container goes or its creation fails, RemoveStale those of containers the
// runtime no longer has, and Open those that are no longer mounted (after a reboot).
// Removal unmounts and then removes only an empty directory or the empty file
// a pin was mounted on: it never deletes what a pin showed. The mount and
// removal mechanics are volumes/internal/pin's; this file keeps the pins'
// names, their directories and who may make or remove them.
const (
	pinSep = "@"
	// maxSubpathLen bounds a subpath, as the kernel bounds a path.
	maxSubpathLen = 4096
)

// Subpath asks for a directory inside a named volume to be mounted: Path,
// relative to the volume's data, in volume Name of Namespace, for the mount
// with index Pin among the container's mounts.
type Subpath struct {
	Namespace string
	Name      string
	Path      string
	Pin       int
}

// SubpathError says which subpath could not be pinned and why.
type SubpathError struct {
	Subpath Subpath
	Err     error
}

func (e *SubpathError) Error() string {
	return fmt.Sprintf("subpath %q of volume %q: %s", e.Subpath.Path, e.Subpath.Name, e.Err.Error())
}

func (e *SubpathError) Unwrap() error { return e.Err }

// ValidateSubpath checks a subpath and returns it cleaned: a relative path of
// at most 4096 bytes, without NUL or newline, that names a directory below
// the volume's data (no "..", not the data directory itself). The error
// wraps ErrInvalid.
func ValidateSubpath(p string) (string, error) {
	bad := func(reason string) (string, error) {
		return "", fmt.Errorf("subpath %q: %w: %s", p, ErrInvalid, reason)
	}
	switch {
	case p == "":
		return bad("must not be empty")
	case len(p) > maxSubpathLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxSubpathLen))
	case strings.ContainsAny(p, "\x00\n"):
		return bad("contains a NUL or a newline")
	case strings.HasPrefix(p, "/"):
		return bad("must be relative to the volume")
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return bad(`must not contain ".."`)
		}
	}
	c := path.Clean(p)
	if c == "." {
		return bad("names the volume itself, not a directory inside it")
	}
	return c, nil
}

// Pins are the pins of a store's containers, below ROOT/pins: the plugin
// makes them for bind sources (HostPath), Acquire for subpaths, and they go
// with their container (Remove, RemoveStale). They are made and removed
// under the store's lock, so that a pin and the references of its volume
// change together.
type Pins struct {
	s   *Store
	dir string // ROOT/pins with ROOT's symlinks resolved
}

// Pins returns the store's pins.
func (s *Store) Pins() *Pins { return &s.pins }

// HostPath pins the file or directory open at src (an O_PATH descriptor
// is enough) for mount n of container containerID and returns the pin's
// path, which is what the runtime should mount. A pin of the same mount made
// before is replaced.
func (p *Pins) HostPath(containerID string, n int, src *os.File) (string, error) {
	if err := validateID("container ID", containerID); err != nil {
		return "", err
	}
	var pinPath string
	err := p.withLock(fmt.Sprintf("pinning mount %d of container %q", n, containerID), func() error {
		var err error
		pinPath, err = p.pinLocked(containerID, strconv.Itoa(n), int(src.Fd()))
		return err
	})
	return pinPath, err
}

// withLock runs fn under the store's exclusive lock without the reference
// index: pins are made and removed inside NRI requests, so the wait is
// bounded like every request's (WithLockTimeout).
func (p *Pins) withLock(what string, fn func() error) error {
	ctx, cancel := p.s.requestContext()
	defer cancel()
	return p.s.locked(ctx, what, unix.LOCK_EX, false, fn)
}

// Remove removes every pin of container containerID; a container without
// pins is no error.
func (p *Pins) Remove(containerID string) error {
	if err := validateID("container ID", containerID); err != nil {
		return err
	}
	// Only a CreateContainer of this container makes its pin directory, so
	// one that is not there now will not be: most containers have no pins,
	// and their removal need not wait for the store's lock. On a closed
	// store the look fails, and then the lock.
	err := p.s.whileOpen(func() error {
		var st unix.Stat_t
		return unix.Fstatat(p.s.rootFd, pinsDir+"/"+containerID, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return p.withLock(fmt.Sprintf("unpinning the mounts of container %q", containerID), func() error {
		return p.unpinLocked(containerID)
	})
}

// RemoveStale removes the pins of every container not in live and
// returns those containers' IDs. Entries that are not a container's pins are
// left for Check to report.
func (p *Pins) RemoveStale(live map[string]bool) ([]string, error) {
	var removed []string
	var errs []error
	err := p.withLock("removing the pins of containers that are gone", func() error {
		pinsFd, err := p.openPins(false)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		ids, err := fsx.ReadDirNames(pinsFd)
		unix.Close(pinsFd)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if live[id] || validateID("", id) != nil {
				continue
			}
			if err := p.unpinLocked(id); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return removed, errors.Join(errs...)
}

// volume returns the volume whose directory the pin at source shows,
// when source is the path of a subpath pin of this store.
func (p *Pins) volume(source string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(source, p.dir+"/")
	if !ok {
		return "", "", false
	}
	id, entry, ok := strings.Cut(rest, "/")
	if !ok || validateID("", id) != nil {
		return "", "", false
	}
	ns, name, ok = parsePinEntry(entry)
	if !ok || ns == "" {
		return "", "", false
	}
	return ns, name, true
}

// parsePinEntry checks a pin entry name, a mount index and, for a subpath
// pin, the volume's namespace and name, and returns those two.
func parsePinEntry(entry string) (ns, name string, ok bool) {
	parts := strings.Split(entry, pinSep)
	n, err := strconv.Atoi(parts[0])
	if err != nil || n < 0 || strconv.Itoa(n) != parts[0] {
		return "", "", false
	}
	switch len(parts) {
	case 1:
		return "", "", true
	case 3:
		if ValidateNamespace(parts[1]) != nil || ValidateName(parts[2]) != nil {
			return "", "", false
		}
		return parts[1], parts[2], true
	}
	return "", "", false
}

// pinSubpathLocked opens sub.Path below the data of v without following any
// symlink, checks that it is a directory and pins it.
func (p *Pins) pinSubpathLocked(id string, sub Subpath, v *Volume) (string, error) {
	nsFd, err := fsx.OpenDir(p.s.dirFd, v.Namespace)
	if err != nil {
		return "", publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(nsFd)
	dataFd, err := fsx.OpenDir(nsFd, v.Name+"/"+dataDir)
	if err != nil {
		return "", publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(dataFd)
	fd, err := fsx.OpenBeneath(dataFd, sub.Path, unix.O_PATH|unix.O_DIRECTORY)
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", fmt.Errorf("%w: no such directory in the volume (a subpath is never created: make it first)", ErrNotFound)
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
		return "", fmt.Errorf("%w: not a directory, or a symlink is on its way (subpaths follow no symlink)", ErrInvalid)
	case err != nil:
		return "", err
	}
	defer unix.Close(fd)
	return p.pinLocked(id, strconv.Itoa(sub.Pin)+pinSep+v.Namespace+pinSep+v.Name, fd)
}

// pinLocked makes entry below the pins of container id a private, recursive
// bind mount of the object open at src and returns its path.
func (p *Pins) pinLocked(id, entry string, src int) (string, error) {
	// Checked before the container's pin directory is made, so a refusal
	// leaves nothing behind.
	if err := pin.Pinnable(src); errors.Is(err, pin.ErrKind) {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	} else if err != nil {
		return "", err
	}
	ctrFd, err := p.openPinDir(id)
	if err != nil {
		return "", err
	}
	defer unix.Close(ctrFd)
	return pin.Make(ctrFd, filepath.Join(p.dir, id), entry, src)
}

// openPins opens ROOT/pins, making it first when create is set.
func (p *Pins) openPins(create bool) (int, error) {
	if create {
		fd, err := ensureDirAt(p.s.rootFd, pinsDir)
		if err != nil {
			return -1, fmt.Errorf("pins: %w", err)
		}
		return fd, nil
	}
	return fsx.OpenDir(p.s.rootFd, pinsDir)
}

// openPinDir opens, making it if needed, the pin directory of container id.
func (p *Pins) openPinDir(id string) (int, error) {
	pinsFd, err := p.openPins(true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pinsFd)
	fd, err := ensureDirAt(pinsFd, id)
	if err != nil {
		return -1, fmt.Errorf("pins of container %q: %w", id, err)
	}
	return fd, nil
}

func (p *Pins) unpinLocked(id string) error {
	pinsFd, err := p.openPins(false)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(pinsFd)
	ctrFd, err := fsx.OpenDir(pinsFd, id)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil // no pins; something that is no directory is for Check to report
	}
	if err != nil {
		return fmt.Errorf("pins of container %q: %w", id, err)
	}
	entries, err := fsx.ReadDirNames(ctrFd)
	if err == nil {
		dir := filepath.Join(p.dir, id)
		for _, e := range entries {
			if err = pin.Remove(ctrFd, dir, e, true); err != nil {
				break
			}
		}
	}
	unix.Close(ctrFd)
	if err != nil {
		return fmt.Errorf("pins of container %q: %w", id, err)
	}
	if err := unix.Unlinkat(pinsFd, id, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("pins of container %q: %w", id, &os.PathError{Op: "rmdir", Path: filepath.Join(p.dir, id), Err: err})
	}
	return nil
}

// removeUnmountedPins removes the pin entries that are no longer mounted
// (after a reboot, or a crash between making an entry and mounting it), and
// then the container directories left empty. It runs under the exclusive
// lock, when no pin is being made. What it cannot remove, Check reports.
func (p *Pins) removeUnmountedPins(all []string) {
	pinsFd, err := p.openPins(false)
	if err != nil {
		return
	}
	defer unix.Close(pinsFd)
	ids, err := fsx.ReadDirNames(pinsFd)
	if err != nil || len(ids) == 0 {
		return
	}
	mounted := p.mountedPins(all)
	for _, id := range ids {
		if validateID("", id) != nil {
			continue
		}
		ctrFd, err := fsx.OpenDir(pinsFd, id)
		if err != nil {
			continue
		}
		entries, _ := fsx.ReadDirNames(ctrFd)
		for _, e := range entries {
			if !mounted[filepath.Join(p.dir, id, e)] {
				pin.Remove(ctrFd, filepath.Join(p.dir, id), e, false)
			}
		}
		unix.Close(ctrFd)
		unix.Unlinkat(pinsFd, id, unix.AT_REMOVEDIR) // only when it is empty now
	}
}

// mountedPins returns the mount points below ROOT/pins among all, the
// mount table.
func (p *Pins) mountedPins(all []string) map[string]bool {
	mps := fsx.MountsBelow(all, p.dir)
	set := make(map[string]bool, len(mps))
	for _, mp := range mps {
		set[mp] = true
	}
	return set
}

// checkPins reports what ROOT/pins holds besides mounted pins of containers.
func (p *Pins) checkPins() ([]Problem, error) {
	pinsFd, err := p.openPins(false)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return []Problem{{Name: pinsDir, Reason: "not a directory (or a symlink)"}}, nil
	}
	defer unix.Close(pinsFd)
	ids, err := fsx.ReadDirNames(pinsFd)
	if err != nil {
		return nil, fmt.Errorf("read pins: %w", err)
	}
	all, err := fsx.MountPoints()
	if err != nil {
		return nil, err
	}
	mounted := p.mountedPins(all)
	var probs []Problem
	slices.Sort(ids)
	for _, id := range ids {
		name := pinsDir + "/" + id
		if validateID("", id) != nil {
			probs = append(probs, Problem{Name: name, Reason: "not a container's pins (invalid container ID)"})
			continue
		}
		ctrFd, err := fsx.OpenDir(pinsFd, id)
		if err != nil {
			probs = append(probs, Problem{Name: name, Reason: "not a directory (or a symlink)"})
			continue
		}
		entries, err := fsx.ReadDirNames(ctrFd)
		unix.Close(ctrFd)
		if err != nil {
			return nil, fmt.Errorf("read pins of container %q: %w", id, err)
		}
		slices.Sort(entries)
		for _, e := range entries {
			switch _, _, ok := parsePinEntry(e); {
			case !ok:
				probs = append(probs, Problem{Name: name + "/" + e, Reason: "not a pin (invalid name)"})
			case !mounted[filepath.Join(p.dir, id, e)]:
				probs = append(probs, Problem{Name: name + "/" + e, Reason: "stray pin: nothing is mounted there"})
			}
		}
	}
	return probs, nil
}
