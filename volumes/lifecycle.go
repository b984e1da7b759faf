// The lifecycle of a volume as people and the CLI see it: create, get,
// list, measure, remove, prune. What containers do to volumes (acquire,
// release, references) is in acquire.go; the report of what is wrong, in
// check.go.

package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// ListOptions selects the volumes List returns.
type ListOptions struct {
	// Namespace lists one namespace; ignored with AllNamespaces.
	Namespace     string
	AllNamespaces bool
	// Size fills in Volume.Size, which walks the data of every unsized
	// volume; a sized one is measured in O(1).
	Size bool
	// Filter, when set, must accept a volume for it to be listed; only
	// the volumes it accepts are measured.
	Filter func(*Volume) bool
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

// Create creates the named volume name in namespace ns with opts. It fails
// with ErrExists if the volume is already there, with ErrInvalid for a name
// that ValidateNamedVolume refuses, and with ErrLimit if its size would take
// the namespace over its budget.
func (s *Store) Create(ns, name string, opts CreateOptions) (*Volume, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateNamedVolume(name); err != nil {
		return nil, err
	}
	if err := opts.validate(); err != nil {
		return nil, volumeError(ns, name, err)
	}
	v := newVolume(ns, name, opts, nil)
	return s.createOne(v, opts, fmt.Sprintf("creating volume %q of namespace %q", name, ns))
}

// createOne makes v, made by newVolume from opts, outside any request:
// its image, if any, is formatted before the lock is taken; what says what
// for a wait on the formatting.
func (s *Store) createOne(v *Volume, opts CreateOptions, what string) (*Volume, error) {
	if err := s.prepareFormats(what, []Request{{Namespace: v.Namespace, Name: v.Name, CreateOptions: opts}}, false); err != nil {
		return nil, err
	}
	err := s.withLock(unix.LOCK_EX, func() error {
		if err := s.createLocked(v, false); err != nil {
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
	v := &Volume{
		Name:      name,
		Namespace: ns,
		CreatedAt: time.Now().Truncate(time.Second),
		Labels:    l,
		Anonymous: owner != nil,
		Owner:     owner,
		UID:       opts.UID,
		GID:       opts.GID,
		UsedBy:    []string{},
		Limit:     opts.Size,
		Inodes:    opts.Inodes,
		cloneOf:   opts.CloneOf,
	}
	if opts.Mode != nil {
		v.Mode = fmt.Sprintf("%04o", *opts.Mode)
	}
	return v
}

// maxID is the largest uid or gid; 2^32-1 means "no id" to the kernel.
const maxID = 1<<32 - 2

func (o CreateOptions) validate() error {
	for _, id := range []struct {
		key string
		v   *int
	}{{"uid", o.UID}, {"gid", o.GID}} {
		if id.v != nil && (*id.v < 0 || *id.v > maxID) {
			return fmt.Errorf("%w: %s %d is not from 0 to %d", ErrInvalid, id.key, *id.v, maxID)
		}
	}
	if o.Mode != nil && *o.Mode > 0o7777 {
		return fmt.Errorf("%w: mode %o has bits beyond 07777", ErrInvalid, *o.Mode)
	}
	if o.Size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrInvalid, o.Size)
	}
	if o.Inodes < 0 || o.Inodes > sizer.MaxInodes {
		return fmt.Errorf("%w: inodes %d is not from 1 to %d", ErrInvalid, o.Inodes, int64(sizer.MaxInodes))
	}
	if o.Inodes > 0 && o.Size == 0 {
		return fmt.Errorf("%w: inodes %d: only a sized volume (size=...) has a file system of its own with an inode count", ErrInvalid, o.Inodes)
	}
	return nil
}

// createLocked makes v on disk: built under a temporary name, then renamed
// into place, so the name never shows a half-made volume. A sized volume on
// the image backend is made from an image formatted ahead (format.go),
// mounted when active says a container uses it at once; with a format
// budget set (the plugin's), one that has none ready fails with a
// *FormattingError rather than format under the lock. A named volume is
// made durably (fsync of its metadata and directories). An anonymous one is
// not: it lives as long as its pod sandbox, and a crash of the node ends every
// sandbox, so the next Synchronize removes it anyway; its creation is on the
// path of every new pod's containers. Nor is one marked PersistLater, whose
// caller calls Persist.
func (s *Store) createLocked(v *Volume, active bool) error {
	durable := !v.Anonymous && !v.PersistLater
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
	nsFd, err := fsx.OpenDir(s.dirFd, ns)
	if err != nil {
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	defer unix.Close(nsFd)
	if _, err := fsx.Lstat(nsFd, name); err == nil {
		if !s.removeUnfinishedLocked(nsFd, ns, name) {
			return volumeError(ns, name, ErrExists)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return volumeError(ns, name, err)
	}
	if v.cloneOf != nil {
		return s.createCloneLocked(nsFd, v, active, durable)
	}
	if v.Limit > 0 {
		if err := s.checkBudgetLocked(ns, v.Limit); err != nil {
			return err
		}
		if v.Backend, err = s.pickBackend(); err != nil {
			return volumeError(ns, name, err)
		}
		if v.Inodes > 0 && v.Backend != BackendImage {
			return volumeError(ns, name, fmt.Errorf("%w: inodes: the %s backend has no inode count to set; only the image backend (ext4) has", ErrInvalid, v.Backend))
		}
	}
	return s.createNewLocked(nsFd, v, active, durable, nil)
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
		var err error
		if v, err = s.getLocked(ns, name); err != nil {
			return publicError(ns, name, err)
		}
		return nil
	})
	return v, err
}

// List returns the volumes of one namespace, or of all, sorted by namespace
// and name. Entries that are not usable volumes are skipped; see Check. It
// holds the store's lock only to fill in UsedBy.
func (s *Store) List(opts ListOptions) ([]*Volume, error) {
	ns := opts.Namespace
	if opts.AllNamespaces {
		ns = ""
	} else if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	// The metadata is read without the lock, which a listing of a big store
	// would otherwise hold for seconds against the plugin's requests; only
	// the users come from under the lock.
	dirFd, err := s.openStoreDir()
	if err != nil {
		return nil, err
	}
	var vols []*Volume
	err = scanAt(dirFd, ns, func(ns string, nsFd int, name string) error {
		if v, err := s.loadVolume(nsFd, ns, name); err == nil {
			vols = append(vols, v)
		}
		return nil
	})
	unix.Close(dirFd)
	if err != nil {
		return nil, err
	}
	err = s.withLock(unix.LOCK_SH, func() error {
		for _, v := range vols {
			v.UsedBy = s.idx.usedBy(v.key())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if opts.Filter != nil {
		vols = slices.DeleteFunc(vols, func(v *Volume) bool { return !opts.Filter(v) })
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
// that is being copied into, or that has something mounted inside it. The
// data is deleted after the lock is released.
func (s *Store) Remove(ns, name string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	var trash string
	var d *detacher
	err := s.withLock(unix.LOCK_EX, func() error {
		var err error
		if d, err = s.newDetacher(); err != nil {
			return err
		}
		if trash, err = d.detach(ns, name); err != nil {
			return err
		}
		return s.bump(s.forgetAnonLocked([]string{volumeKey(ns, name)}))
	})
	if err != nil {
		return err
	}
	if err := d.sync(); err != nil {
		return volumeError(ns, name, err)
	}
	if _, err := s.deleteTrash(trash, false); err != nil {
		return volumeError(ns, name, fmt.Errorf("removed, but deleting its data failed: %w", err))
	}
	return nil
}

// Long operations take the store's lock in batches of at most batchTime and
// leave it free for batchGap between two, so that a plugin request waiting
// for the lock gets it within a batch or two instead of after the whole run.
const (
	batchTime = 20 * time.Millisecond
	batchGap  = 5 * time.Millisecond
)

// Prune removes the unused anonymous volumes of a namespace, and with All the
// unused named ones too, that opts.Filter accepts. It returns what it
// removed, with Size set, and the space reclaimed. A volume that turns out to
// be busy is skipped. It holds the store's lock in short batches (see
// batchTime) and deletes the data after the last one.
func (s *Store) Prune(opts PruneOptions) (removed []*Volume, reclaimed int64, err error) {
	if err := ValidateNamespace(opts.Namespace); err != nil {
		return nil, 0, err
	}
	ns := opts.Namespace
	names, err := s.namesIn(ns)
	if err != nil {
		return nil, 0, err
	}
	var detached []*Volume
	var trashes []string
	err = s.detachInBatches(len(names), func(d *detacher, i int) (string, error) {
		v, err := s.getLocked(ns, names[i])
		if err != nil || len(v.UsedBy) > 0 || !(v.Anonymous || opts.All) {
			return "", nil
		}
		if opts.Filter != nil && !opts.Filter(v) {
			return "", nil
		}
		trash, err := d.detach(ns, v.Name)
		if errors.Is(err, ErrInUse) {
			return "", nil // busy after all: skipped
		}
		if err != nil {
			return "", err
		}
		detached = append(detached, v)
		trashes = append(trashes, trash)
		return v.key(), nil
	})
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for i, v := range detached {
		size, err := s.deleteTrash(trashes[i], true)
		if err != nil {
			errs = append(errs, volumeError(v.Namespace, v.Name, fmt.Errorf("removed, but deleting its data failed: %w", err)))
		}
		v.Size = &size
		reclaimed += size
		removed = append(removed, v)
	}
	return removed, reclaimed, errors.Join(errs...)
}

// detachInBatches calls fn for 0 <= i < n under the exclusive lock, taken in
// batches of at most batchTime with batchGap between them. fn detaches with
// d and returns the key of the volume it detached, or "". After each batch
// the index forgets the detached volumes, the reaper is woken (if this Store
// runs one) and, with the lock released, the removals are made durable. An
// error of fn is collected and the next i goes on.
func (s *Store) detachInBatches(n int, fn func(d *detacher, i int) (string, error)) error {
	var errs []error
	for i := 0; i < n; {
		var d *detacher
		err := s.withLock(unix.LOCK_EX, func() error {
			var err error
			if d, err = s.newDetacher(); err != nil {
				return err
			}
			var keys []string
			for end := time.Now().Add(batchTime); i < n && time.Now().Before(end); i++ {
				key, err := fn(d, i)
				if err != nil {
					errs = append(errs, err)
				}
				if key != "" {
					keys = append(keys, key)
				}
			}
			if len(keys) == 0 {
				return nil
			}
			s.kickReaper()
			return s.bump(s.forgetAnonLocked(keys))
		})
		if d != nil {
			errs = append(errs, d.sync())
		}
		if err != nil {
			return errors.Join(append([]error{err}, errs...)...)
		}
		if i < n {
			time.Sleep(batchGap)
		}
	}
	return errors.Join(errs...)
}

// namesIn returns the valid volume names in namespace ns, sorted, read
// without the store's lock.
func (s *Store) namesIn(ns string) ([]string, error) {
	nsFd, err := s.openNamespace(ns)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", ns, err)
	}
	defer unix.Close(nsFd)
	all, err := fsx.ReadDirNames(nsFd)
	if err != nil {
		return nil, fmt.Errorf("namespace %q: %w", ns, err)
	}
	names := all[:0]
	for _, n := range all {
		if ValidateName(n) == nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
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
	fd, err := fsx.OpenDir(nsFd, v.Name+"/"+dataDir)
	if err != nil {
		return 0, publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(fd)
	st, err := fsx.Fstat(fd)
	if err != nil {
		return 0, volumeError(v.Namespace, v.Name, err)
	}
	size, err := fsx.DiskUsage(fd, st.Dev)
	if err != nil {
		return 0, volumeError(v.Namespace, v.Name, err)
	}
	return size, nil
}
