package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ListOptions selects the volumes List returns.
type ListOptions struct {
	// Namespace lists one namespace; ignored with AllNamespaces.
	Namespace     string
	AllNamespaces bool
	// Size fills in Volume.Size, which walks the data of every unsized
	// volume; a sized one is measured in O(1).
	Size bool
}

// PruneOptions selects the volumes Prune removes. Only unused volumes are ever
// pruned.
type PruneOptions struct {
	// Namespace is the one namespace pruned; it must be valid, so an unset
	// field never prunes every namespace by accident.
	Namespace string
	// All prunes unused named volumes too, not only anonymous ones.
	All bool
	// Filter, when set, must accept a volume for it to be pruned.
	Filter func(*Volume) bool
}

// Problem is an entry of the store that is not a usable volume. List skips
// such entries and nothing deletes them; Check reports them so a person can.
type Problem struct {
	Namespace string
	Name      string
	Reason    string
}

// Create creates the named volume name in namespace ns with opts. It fails
// with ErrExists if the volume is already there, and with ErrLimit if its
// size would take the namespace over its budget.
func (s *Store) Create(ns, name string, opts CreateOptions) (*Volume, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if opts.Size < 0 {
		return nil, volumeError(ns, name, fmt.Errorf("%w: negative size %d", ErrInvalid, opts.Size))
	}
	v := newVolume(ns, name, opts, nil)
	err := s.withLock(unix.LOCK_EX, func() error {
		if err := s.createLocked(v); err != nil {
			return err
		}
		return s.bump(true)
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

func newVolume(ns, name string, opts CreateOptions, owner *Owner) *Volume {
	l := make(map[string]string, len(opts.Labels))
	for k, val := range opts.Labels {
		l[k] = val
	}
	return &Volume{
		Name:      name,
		Namespace: ns,
		CreatedAt: time.Now().Truncate(time.Second),
		Labels:    l,
		Anonymous: owner != nil,
		Owner:     owner,
		UsedBy:    []string{},
		Limit:     opts.Size,
	}
}

// createLocked makes v on disk: built under a temporary name, then renamed
// into place, so the name never shows a half-made volume. A named volume is
// made durably (fsync of its metadata and directories). An anonymous one is
// not: it lives as long as its pod sandbox, and a crash of the node ends every
// sandbox, so the next Synchronize removes it anyway; its creation is on the
// path of every new pod's containers.
func (s *Store) createLocked(v *Volume) error {
	durable := !v.Anonymous
	ns, name := v.Namespace, v.Name
	err := unix.Mkdirat(s.dirFd, ns, 0o700)
	switch {
	case err == nil:
		if err := unix.Fsync(s.dirFd); err != nil {
			return fmt.Errorf("namespace %q: %w", ns, err)
		}
	case !errors.Is(err, unix.EEXIST):
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	nsFd, err := openDir(s.dirFd, ns)
	if err != nil {
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	defer unix.Close(nsFd)
	if _, err := lstatAt(nsFd, name); err == nil {
		return volumeError(ns, name, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return volumeError(ns, name, err)
	}
	if v.Limit > 0 {
		if err := s.checkBudgetLocked(nsFd, ns, v.Limit); err != nil {
			return err
		}
		if v.Backend, err = s.pickBackend(); err != nil {
			return volumeError(ns, name, err)
		}
	}
	v.Mountpoint = s.mountpoint(ns, name)
	tmp := tmpPrefix + name + "-" + randomSuffix()
	if err := unix.Mkdirat(nsFd, tmp, 0o700); err != nil {
		return volumeError(ns, name, err)
	}
	err = s.fillNew(nsFd, tmp, v, durable)
	if err == nil {
		err = unix.Renameat2(nsFd, tmp, nsFd, name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EINVAL) { // filesystem without RENAME_NOREPLACE; the lock and the check above suffice
			err = unix.Renameat(nsFd, tmp, nsFd, name)
		}
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			err = ErrExists
		}
	}
	if err != nil {
		destroySubvolume(nsFd, tmp)
		removeAllAt(nsFd, tmp, s.dev)
		return volumeError(ns, name, err)
	}
	if !durable {
		return nil
	}
	if err := unix.Fsync(nsFd); err != nil {
		return volumeError(ns, name, err)
	}
	return nil
}

func (s *Store) fillNew(nsFd int, tmp string, v *Volume, durable bool) error {
	fd, err := openDir(nsFd, tmp)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if v.Limit > 0 {
		z, err := sizerFor(v.Backend)
		if err != nil {
			return err
		}
		if err := z.prepare(fd, v.Limit); err != nil {
			return fmt.Errorf("making a %s volume of %s: %w", v.Backend, FormatBytes(v.Limit), err)
		}
	} else if err := mkdirData(fd); err != nil {
		// mkdirData sets the mode: the umask must not decide what
		// containers see.
		return err
	}
	return writeVolume(fd, v, durable)
}

// Get returns volume name of namespace ns, or an error wrapping ErrNotFound.
func (s *Store) Get(ns, name string) (*Volume, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	var v *Volume
	err := s.withLock(unix.LOCK_SH, func() error {
		nsFd, err := openDir(s.dirFd, ns)
		if err != nil {
			return publicError(ns, name, err)
		}
		defer unix.Close(nsFd)
		v, err = s.readVolume(nsFd, ns, name)
		if err != nil {
			return publicError(ns, name, err)
		}
		return nil
	})
	return v, err
}

// List returns the volumes of one namespace, or of all, sorted by namespace
// and name. Entries that are not usable volumes are skipped; see Check.
func (s *Store) List(opts ListOptions) ([]*Volume, error) {
	ns := opts.Namespace
	if opts.AllNamespaces {
		ns = ""
	} else if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	var vols []*Volume
	err := s.withLock(unix.LOCK_SH, func() error {
		return s.scan(ns, func(ns string, nsFd int, name string) error {
			if v, err := s.readVolume(nsFd, ns, name); err == nil {
				vols = append(vols, v)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if opts.Size {
		// Sizes are measured outside the lock: a walk of large volumes must
		// not hold up the plugin.
		for _, v := range vols {
			size, err := s.Size(v)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			v.Size = &size
		}
	}
	return vols, nil
}

// Remove removes volume name of namespace ns and its data. It refuses with
// ErrInUse a volume that a container uses (the message names the containers),
// that is being copied into, or that has something mounted inside it.
func (s *Store) Remove(ns, name string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	var trash string
	err := s.withLock(unix.LOCK_EX, func() error {
		var err error
		trash, err = s.detachLocked(ns, name)
		if err != nil {
			return err
		}
		return s.bump(s.forgetAnonLocked([]string{volumeKey(ns, name)}))
	})
	if err != nil {
		return err
	}
	if _, err := s.deleteTrash(ns, trash, false); err != nil {
		return fmt.Errorf("volume %q in namespace %q removed, but deleting its data failed: %w", name, ns, err)
	}
	return nil
}

// detachLocked checks that the volume may go and renames it to a temporary
// name, which deleteTrash then deletes outside the lock. A broken entry that
// is no directory (say, a symlink planted in the store) is unlinked itself,
// never followed; the returned name is "" then.
func (s *Store) detachLocked(ns, name string) (string, error) {
	nsFd, err := openDir(s.dirFd, ns)
	if err != nil {
		return "", publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	volFd, err := openDir(nsFd, name)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if err := unix.Unlinkat(nsFd, name, 0); err != nil {
			return "", volumeError(ns, name, err)
		}
		return "", unix.Fsync(nsFd)
	}
	if err != nil {
		return "", publicError(ns, name, err)
	}
	defer unix.Close(volFd)
	if users := s.idx.usedBy(volumeKey(ns, name)); len(users) > 0 {
		return "", fmt.Errorf("volume %q in namespace %q: %w by container(s) %s",
			name, ns, ErrInUse, strings.Join(users, ", "))
	}
	if err := unix.Flock(volFd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return "", fmt.Errorf("volume %q in namespace %q: %w: copy-up in progress", name, ns, ErrInUse)
		}
		return "", volumeError(ns, name, err)
	}
	// A sized volume's own file system comes down first; a volume whose
	// metadata cannot be read is removed like an unsized one.
	if v, err := s.readVolumeAt(volFd, ns, name); err == nil && v.Limit > 0 {
		z, err := sizerFor(v.Backend)
		if err == nil {
			err = z.deactivate(volFd, filepath.Join(s.dir, ns, name))
		}
		if err != nil {
			return "", volumeError(ns, name, err)
		}
	}
	if err := s.checkNoMounts(volFd, ns, name); err != nil {
		return "", err
	}
	trash := tmpPrefix + "rm-" + randomSuffix()
	if err := unix.Renameat(nsFd, name, nsFd, trash); err != nil {
		return "", volumeError(ns, name, err)
	}
	if err := unix.Fsync(nsFd); err != nil {
		return "", volumeError(ns, name, err)
	}
	return trash, nil
}

// checkNoMounts refuses a volume with a mount at or below its directory:
// removing it would delete whatever is mounted there, or fail half-way.
func (s *Store) checkNoMounts(volFd int, ns, name string) error {
	st, err := fstat(volFd)
	if err != nil {
		return volumeError(ns, name, err)
	}
	if st.Dev != s.dev {
		return fmt.Errorf("volume %q in namespace %q: %w: its directory is a mount point", name, ns, ErrInUse)
	}
	mounts, err := mountsBelow(filepath.Join(s.dir, ns, name))
	if err != nil {
		return volumeError(ns, name, err)
	}
	if len(mounts) > 0 {
		return fmt.Errorf("volume %q in namespace %q: %w: something is mounted inside it (%s)",
			name, ns, ErrInUse, strings.Join(mounts, ", "))
	}
	return nil
}

// deleteTrash deletes a volume detachLocked set aside, first measuring its
// data when measure is set. It needs no lock: nothing else uses the name.
func (s *Store) deleteTrash(ns, trash string, measure bool) (int64, error) {
	if trash == "" {
		return 0, nil
	}
	nsFd, err := s.openNamespace(ns)
	if err != nil {
		return 0, err
	}
	defer unix.Close(nsFd)
	var size int64
	if measure {
		if fd, err := openDir(nsFd, trash+"/"+dataDir); err == nil {
			if st, err := fstat(fd); err == nil {
				size, _ = diskUsageAt(fd, st.Dev, make(map[inode]bool))
			}
			unix.Close(fd)
		}
		// An image backend's space is what its file holds on disk.
		if st, err := lstatAt(nsFd, trash+"/"+imageFile); err == nil {
			size += st.Blocks * 512
		}
	}
	if err := destroySubvolume(nsFd, trash); err != nil {
		return size, err
	}
	return size, removeAllAt(nsFd, trash, s.dev)
}

// openNamespace opens a namespace directory outside the store lock.
func (s *Store) openNamespace(ns string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return -1, errors.New("volume store is closed")
	}
	return openDir(s.dirFd, ns)
}

// Prune removes the unused anonymous volumes of a namespace, and with All the
// unused named ones too, that opts.Filter accepts. It returns what it
// removed, with Size set, and the space reclaimed. A volume that turns out to
// be busy is skipped.
func (s *Store) Prune(opts PruneOptions) (removed []*Volume, reclaimed int64, err error) {
	if err := ValidateNamespace(opts.Namespace); err != nil {
		return nil, 0, err
	}
	var detached []*Volume
	var trashes []string
	var errs []error
	err = s.withLock(unix.LOCK_EX, func() error {
		err := s.scan(opts.Namespace, func(ns string, nsFd int, name string) error {
			v, err := s.readVolume(nsFd, ns, name)
			if err != nil || len(v.UsedBy) > 0 || !(v.Anonymous || opts.All) {
				return nil
			}
			if opts.Filter != nil && !opts.Filter(v) {
				return nil
			}
			trash, err := s.detachLocked(ns, name)
			switch {
			case errors.Is(err, ErrInUse):
			case err != nil:
				errs = append(errs, err)
			default:
				detached = append(detached, v)
				trashes = append(trashes, trash)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(detached) > 0 {
			keys := make([]string, len(detached))
			for i, v := range detached {
				keys[i] = v.key()
			}
			return s.bump(s.forgetAnonLocked(keys))
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	for i, v := range detached {
		size, err := s.deleteTrash(v.Namespace, trashes[i], true)
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %q in namespace %q removed, but deleting its data failed: %w", v.Name, v.Namespace, err))
		}
		v.Size = &size
		reclaimed += size
		removed = append(removed, v)
	}
	return removed, reclaimed, errors.Join(errs...)
}

// Size returns the disk usage of v's data, like du: it never follows a
// symlink, never crosses into another mount and counts a hardlinked inode
// once. A sized volume is measured by its backend in O(1): statfs of its
// file system, or its qgroup. It takes no lock, so measuring big volumes
// holds up nobody.
func (s *Store) Size(v *Volume) (int64, error) {
	if err := ValidateNamespace(v.Namespace); err != nil {
		return 0, err
	}
	if err := ValidateName(v.Name); err != nil {
		return 0, err
	}
	nsFd, err := s.openNamespace(v.Namespace)
	if err != nil {
		return 0, publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(nsFd)
	if v.Limit > 0 {
		return sizedUsage(nsFd, v)
	}
	fd, err := openDir(nsFd, v.Name+"/"+dataDir)
	if err != nil {
		return 0, publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(fd)
	st, err := fstat(fd)
	if err != nil {
		return 0, volumeError(v.Namespace, v.Name, err)
	}
	size, err := diskUsageAt(fd, st.Dev, make(map[inode]bool))
	if err != nil {
		return 0, volumeError(v.Namespace, v.Name, err)
	}
	return size, nil
}

// Check reports every entry of the store that is not a usable volume:
// directories without a readable volume.json, symlinks, entries with invalid
// names and leftovers of interrupted writes that Open could not delete; and
// mounts below the store and loop devices backed by its files that no sized
// volume accounts for. The store's own files (.lock, .refs, .pods) are no
// problem.
func (s *Store) Check() ([]Problem, error) {
	var probs []Problem
	err := s.locked(unix.LOCK_SH, false, func() error {
		defer func() { probs = append(probs, s.checkSizedLocked()...) }()
		nss, err := readDirNames(s.dirFd)
		if err != nil {
			return fmt.Errorf("read volume store: %w", err)
		}
		sort.Strings(nss)
		for _, ns := range nss {
			switch {
			case ns == lockFile || ns == refsDir || ns == podsDir:
				continue
			case strings.HasPrefix(ns, tmpPrefix):
				probs = append(probs, Problem{Namespace: ns, Reason: "leftover temporary entry"})
				continue
			case ValidateNamespace(ns) != nil:
				probs = append(probs, Problem{Namespace: ns, Reason: "not a valid namespace name"})
				continue
			}
			nsFd, err := openDir(s.dirFd, ns)
			if err != nil {
				probs = append(probs, Problem{Namespace: ns, Reason: "namespace is not a directory (or a symlink)"})
				continue
			}
			names, err := readDirNames(nsFd)
			if err != nil {
				unix.Close(nsFd)
				return fmt.Errorf("namespace %q: %w", ns, err)
			}
			sort.Strings(names)
			for _, name := range names {
				switch {
				case strings.HasPrefix(name, tmpPrefix):
					probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "leftover temporary entry"})
				case ValidateName(name) != nil:
					probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "not a valid volume name"})
				default:
					if _, err := s.readVolume(nsFd, ns, name); err != nil {
						probs = append(probs, Problem{Namespace: ns, Name: name, Reason: err.Error()})
					}
				}
			}
			unix.Close(nsFd)
		}
		return nil
	})
	return probs, err
}

// checkSizedLocked reports the mounts below the store other than the _data
// of a sized image volume, and the loop devices backed by a file of the
// store other than the disk.img of one.
func (s *Store) checkSizedLocked() []Problem {
	var probs []Problem
	sized := func(path, leaf string) (string, string, bool) {
		rest, ok := strings.CutPrefix(path, s.dir+"/")
		if !ok {
			return "", "", false
		}
		parts := strings.Split(rest, "/")
		if len(parts) != 3 || parts[2] != leaf || ValidateNamespace(parts[0]) != nil || ValidateName(parts[1]) != nil {
			if len(parts) > 1 {
				return parts[0], parts[1], false
			}
			return parts[0], "", false
		}
		v, err := s.getLocked(parts[0], parts[1])
		return parts[0], parts[1], err == nil && v.Backend == BackendImage
	}
	mounts, err := mountsBelow(s.dir)
	if err != nil {
		probs = append(probs, Problem{Reason: fmt.Sprintf("cannot read the mount table: %v", err)})
	}
	for _, mp := range mounts {
		if ns, name, ok := sized(mp, dataDir); !ok {
			probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "mount at " + mp + " that no sized volume accounts for"})
		}
	}
	for dev, backing := range sysfsLoop() {
		if !strings.HasPrefix(backing, s.dir+"/") {
			continue
		}
		if ns, name, ok := sized(backing, imageFile); !ok {
			probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "loop device " + dev + " holds " + backing + ", which no sized volume accounts for"})
		}
	}
	sort.Slice(probs, func(i, j int) bool { return probs[i].Reason < probs[j].Reason })
	return probs
}
