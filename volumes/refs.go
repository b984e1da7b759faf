package volumes

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Acquire provides the volumes container containerID asks for and records
// that it uses them: missing volumes are created (named ones with the
// request's Labels, anonymous ones with its Owner), and containerID is added to
// the UsedBy of each. It is all-or-nothing: on any error it removes the
// volumes it created and the references it added. Acquiring again for the
// same container changes nothing and returns the same volumes.
func (s *Store) Acquire(containerID string, reqs []Request) ([]*Volume, error) {
	if containerID == "" {
		return nil, fmt.Errorf("container ID: %w: must not be empty", ErrInvalid)
	}
	wants, err := normalizeRequests(reqs)
	if err != nil {
		return nil, err
	}
	var vols []*Volume
	err = s.withLock(unix.LOCK_EX, func() error {
		var err error
		vols, err = s.acquireLocked(containerID, wants)
		return err
	})
	if err != nil {
		return nil, err
	}
	return vols, nil
}

// normalizeRequests validates reqs, names anonymous ones and drops repeats.
func normalizeRequests(reqs []Request) ([]Request, error) {
	seen := make(map[string]bool, len(reqs))
	out := make([]Request, 0, len(reqs))
	for _, r := range reqs {
		if err := ValidateNamespace(r.Namespace); err != nil {
			return nil, err
		}
		if r.Name == "" {
			if r.Owner == nil || r.Owner.PodSandboxID == "" || r.Owner.Target == "" {
				return nil, fmt.Errorf("anonymous volume request: %w: needs an owner with a pod sandbox ID and a target", ErrInvalid)
			}
			owner := *r.Owner
			r.Owner = &owner
			r.Name = AnonymousName(owner)
		} else {
			if err := ValidateName(r.Name); err != nil {
				return nil, err
			}
			r.Owner = nil
		}
		k := volumeKey(r.Namespace, r.Name)
		if !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *Store) acquireLocked(id string, wants []Request) ([]*Volume, error) {
	var created, added, vols []*Volume
	rollback := func(cause error) error {
		errs := []error{cause}
		for _, v := range added {
			errs = append(errs, s.updateLocked(v.Namespace, v.Name, func(v *Volume) bool { return removeID(v, id) }))
		}
		for _, v := range created {
			trash, err := s.discardLocked(v.Namespace, v.Name)
			if err == nil {
				_, err = s.deleteTrashLocked(v.Namespace, trash)
			}
			errs = append(errs, err)
		}
		if err := s.bump(false); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	for _, r := range wants {
		v, err := s.getLocked(r.Namespace, r.Name)
		switch {
		case isAbsent(err):
			v = newVolume(r.Namespace, r.Name, r.Labels, r.Owner)
			v.UsedBy = []string{id}
			if err := s.createLocked(v); err != nil {
				return nil, rollback(err)
			}
			created = append(created, v)
		case err != nil:
			return nil, rollback(publicError(r.Namespace, r.Name, err))
		case r.Owner != nil && !v.Anonymous:
			return nil, rollback(fmt.Errorf("anonymous volume %q in namespace %q: %w: a named volume has that name", r.Name, r.Namespace, ErrExists))
		case !slices.Contains(v.UsedBy, id):
			err := s.updateLocked(r.Namespace, r.Name, func(v *Volume) bool { return addID(v, id) })
			if err != nil {
				return nil, rollback(err)
			}
			addID(v, id)
			added = append(added, v)
		}
		vols = append(vols, v)
	}
	if len(created)+len(added) == 0 {
		return vols, nil
	}
	for _, v := range vols {
		addRef(s.refs, id, v.key())
	}
	return vols, s.bump(true)
}

func addID(v *Volume, id string) bool {
	i, found := slices.BinarySearch(v.UsedBy, id)
	if found {
		return false
	}
	v.UsedBy = slices.Insert(v.UsedBy, i, id)
	return true
}

func removeID(v *Volume, id string) bool {
	i := slices.Index(v.UsedBy, id)
	if i < 0 {
		return false
	}
	v.UsedBy = slices.Delete(v.UsedBy, i, i+1)
	return true
}

// getLocked reads one volume; see readVolume for its errors.
func (s *Store) getLocked(ns, name string) (*Volume, error) {
	nsFd, err := openDir(s.dirFd, ns)
	if err != nil {
		return nil, err
	}
	defer unix.Close(nsFd)
	return s.readVolume(nsFd, ns, name)
}

// updateLocked applies change to the metadata of one volume and writes it
// back if change reports a change.
func (s *Store) updateLocked(ns, name string, change func(*Volume) bool) error {
	nsFd, err := openDir(s.dirFd, ns)
	if err != nil {
		return publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	volFd, err := openDir(nsFd, name)
	if err != nil {
		return publicError(ns, name, err)
	}
	defer unix.Close(volFd)
	v, err := s.readVolumeAt(volFd, ns, name)
	if err != nil {
		return publicError(ns, name, err)
	}
	if !change(v) {
		return nil
	}
	if err := writeVolume(nsFd, volFd, v); err != nil {
		return volumeError(ns, name, err)
	}
	return nil
}

// discardLocked sets a volume aside for deletion without the in-use checks
// of detachLocked: Acquire uses it to undo a volume it has just created.
func (s *Store) discardLocked(ns, name string) (string, error) {
	nsFd, err := openDir(s.dirFd, ns)
	if err != nil {
		return "", publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	trash := tmpPrefix + "rm-" + randomSuffix()
	if err := unix.Renameat(nsFd, name, nsFd, trash); err != nil {
		return "", volumeError(ns, name, err)
	}
	return trash, unix.Fsync(nsFd)
}

// deleteTrashLocked is deleteTrash for callers that hold the store mutex.
func (s *Store) deleteTrashLocked(ns, trash string) (int64, error) {
	nsFd, err := openDir(s.dirFd, ns)
	if err != nil {
		return 0, err
	}
	defer unix.Close(nsFd)
	return 0, removeAllAt(nsFd, trash, s.dev)
}

// Release records that container containerID no longer uses any volume. For
// a container that uses none it is a cheap no-op.
func (s *Store) Release(containerID string) error {
	return s.withLock(unix.LOCK_EX, func() error {
		keys := s.refs[containerID]
		if len(keys) == 0 {
			return nil
		}
		var errs []error
		for _, k := range sortedKeys(keys) {
			ns, name, _ := strings.Cut(k, "/")
			err := s.updateLocked(ns, name, func(v *Volume) bool { return removeID(v, containerID) })
			if err != nil && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return errors.Join(append(errs, s.bump(false))...)
		}
		delete(s.refs, containerID)
		return s.bump(true)
	})
}

func sortedKeys(m map[string]struct{}) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// RemovePodVolumes removes the anonymous volumes of pod sandbox
// podSandboxID that no container uses, and returns their names.
func (s *Store) RemovePodVolumes(podSandboxID string) (removed []string, err error) {
	if podSandboxID == "" {
		return nil, fmt.Errorf("pod sandbox ID: %w: must not be empty", ErrInvalid)
	}
	var detached []*Volume
	var trashes []string
	var errs []error
	err = s.withLock(unix.LOCK_EX, func() error {
		err := s.scan("", func(ns string, nsFd int, name string) error {
			if !isAnonymousName(name) {
				return nil
			}
			v, err := s.readVolume(nsFd, ns, name)
			if err != nil || !v.Anonymous || v.Owner == nil || v.Owner.PodSandboxID != podSandboxID || len(v.UsedBy) > 0 {
				return nil
			}
			trash, err := s.detachLocked(ns, name)
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			detached = append(detached, v)
			trashes = append(trashes, trash)
			return nil
		})
		if err != nil {
			return err
		}
		if len(detached) > 0 {
			return s.bump(true)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, v := range detached {
		if _, err := s.deleteTrash(v.Namespace, trashes[i], false); err != nil {
			errs = append(errs, volumeError(v.Namespace, v.Name, err))
		}
		removed = append(removed, v.Name)
	}
	return removed, errors.Join(errs...)
}

// isAnonymousName reports whether name has the form AnonymousName gives:
// 64 lowercase hex digits. It spares reading the metadata of named volumes.
func isAnonymousName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Reconcile makes the store agree with the runtime after a plugin restart:
// the users of every volume become exactly refs (volume key "NS/NAME" to
// container IDs; a volume missing from refs has none), and unless
// keepAnonymous, unused anonymous volumes whose pod is not in livePods are
// removed.
func (s *Store) Reconcile(refs map[string][]string, livePods map[string]bool, keepAnonymous bool) error {
	var trashes []*Volume
	var trashNames []string
	var errs []error
	err := s.withLock(unix.LOCK_EX, func() error {
		index := make(map[string]map[string]struct{})
		err := s.scan("", func(ns string, nsFd int, name string) error {
			v, err := s.readVolume(nsFd, ns, name)
			if err != nil {
				return nil
			}
			want := slices.Clone(refs[v.key()])
			sort.Strings(want)
			want = slices.Compact(want)
			if want == nil {
				want = []string{}
			}
			if !slices.Equal(want, v.UsedBy) {
				err := s.updateLocked(ns, name, func(v *Volume) bool { v.UsedBy = want; return true })
				if err != nil {
					errs = append(errs, err)
					return nil
				}
			}
			for _, id := range want {
				addRef(index, id, v.key())
			}
			if keepAnonymous || !v.Anonymous || len(want) > 0 || (v.Owner != nil && livePods[v.Owner.PodSandboxID]) {
				return nil
			}
			trash, err := s.detachLocked(ns, name)
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			trashes = append(trashes, v)
			trashNames = append(trashNames, trash)
			return nil
		})
		if err != nil {
			return err
		}
		s.refs = index
		return s.bump(len(errs) == 0)
	})
	if err != nil {
		return err
	}
	for i, v := range trashes {
		if _, err := s.deleteTrash(v.Namespace, trashNames[i], false); err != nil {
			errs = append(errs, volumeError(v.Namespace, v.Name, err))
		}
	}
	return errors.Join(errs...)
}
