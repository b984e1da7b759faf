package volumes

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"golang.org/x/sys/unix"
)

// Acquire provides the volumes container containerID asks for and records
// that it uses them: missing volumes are created (named ones with the
// request's Labels, anonymous ones with its Owner), and the volumes join the
// list of containerID in .refs; a volume that exists is not written to. It is
// all-or-nothing: on any error it removes the volumes it created and leaves
// the container's references as they were. Acquiring again for the same
// container adds to what it holds, so a repeat changes nothing and returns
// the same volumes. The container ID must match [a-zA-Z0-9][a-zA-Z0-9_.-]*
// (at most 128 characters), as containerd's do.
func (s *Store) Acquire(containerID string, reqs []Request) ([]*Volume, error) {
	if err := validateID("container ID", containerID); err != nil {
		return nil, err
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
		if r.Size < 0 {
			return nil, fmt.Errorf("volume request: %w: negative size %d", ErrInvalid, r.Size)
		}
		if r.Name == "" {
			if r.Owner == nil || r.Owner.PodSandboxID == "" || r.Owner.Target == "" {
				return nil, fmt.Errorf("anonymous volume request: %w: needs an owner with a pod sandbox ID and a target", ErrInvalid)
			}
			if err := validateID("pod sandbox ID", r.Owner.PodSandboxID); err != nil {
				return nil, err
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
	var created, activated []*Volume
	podLists := map[string][]string{} // pod lists as they were, to restore
	before := s.idx.ctrs[id]
	wroteRefs := false
	rollback := func(cause error) error {
		errs := []error{cause}
		for _, v := range activated {
			if len(s.idx.users[v.key()]) == 0 {
				errs = append(errs, s.deactivateLocked(v))
			}
		}
		for _, v := range created {
			trash, err := s.discardLocked(v.Namespace, v.Name)
			if err == nil {
				_, err = s.deleteTrashLocked(v.Namespace, trash)
			}
			errs = append(errs, err)
		}
		for pod, keys := range podLists {
			errs = append(errs, writeList(s.podsFd, pod, keys))
		}
		if wroteRefs {
			errs = append(errs, writeList(s.refsFd, id, sortedSet(before)))
		}
		// The index may be ahead of the disk now: the next operation
		// rebuilds it.
		s.idx = nil
		errs = append(errs, s.bump(false))
		return errors.Join(errs...)
	}
	keys := maps.Clone(before)
	if keys == nil {
		keys = make(map[string]struct{}, len(wants))
	}
	vols := make([]*Volume, 0, len(wants))
	for _, r := range wants {
		v, err := s.getLocked(r.Namespace, r.Name)
		switch {
		case isAbsent(err):
			v = newVolume(r.Namespace, r.Name, r.CreateOptions, r.Owner)
			if r.Owner != nil {
				// The pod's list names the volume before it appears, so
				// RemovePodVolumes finds it whenever the process dies.
				pod := r.Owner.PodSandboxID
				if _, saved := podLists[pod]; !saved {
					podLists[pod] = sortedSet(s.idx.pods[pod])
				}
				s.idx.addAnon(pod, v.key())
				if err := s.setPodAnon(pod); err != nil {
					return nil, rollback(fmt.Errorf("anonymous volumes of pod sandbox %q: %w", pod, err))
				}
			}
			if err := s.createLocked(v); err != nil {
				return nil, rollback(err)
			}
			created = append(created, v)
		case err != nil:
			return nil, rollback(publicError(r.Namespace, r.Name, err))
		case r.Owner != nil && !v.Anonymous:
			return nil, rollback(fmt.Errorf("anonymous volume %q in namespace %q: %w: a named volume has that name", r.Name, r.Namespace, ErrExists))
		}
		keys[v.key()] = struct{}{}
		vols = append(vols, v)
	}
	// Sized volumes come up on use, so after a reboot, which unmounts
	// everything, the next container gets its volume back.
	for _, v := range vols {
		if v.Limit == 0 || s.isMountedLocked(v.Namespace, v.Name) {
			continue
		}
		if err := s.activateLocked(v); err != nil {
			return nil, rollback(err)
		}
		activated = append(activated, v)
	}
	if len(keys) == len(before) && len(created) == 0 {
		return vols, nil // a repeat: the container holds every volume already
	}
	if len(keys) != len(before) {
		wroteRefs = true
		if err := writeList(s.refsFd, id, sortedSet(keys)); err != nil {
			return nil, rollback(fmt.Errorf("references of container %q: %w", id, err))
		}
	}
	if err := s.bump(true); err != nil {
		return nil, rollback(err)
	}
	s.idx.setRefs(id, keys)
	for _, v := range vols {
		v.UsedBy = s.idx.usedBy(v.key())
	}
	return vols, nil
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
	if err := destroySubvolume(nsFd, trash); err != nil {
		return 0, err
	}
	return 0, removeAllAt(nsFd, trash, s.dev)
}

// Release records that container containerID no longer uses any volume: it
// removes the container's list from .refs. For a container that holds
// nothing it writes nothing. A sized volume it was the last user of is
// deactivated (its file system unmounted), best effort.
func (s *Store) Release(containerID string) error {
	if err := validateID("container ID", containerID); err != nil {
		return err
	}
	return s.withLock(unix.LOCK_EX, func() error {
		_, known := s.idx.ctrs[containerID]
		// Unlinked even when the index does not know it: an unreadable list
		// counts for nothing, but need not wait for Reconcile to go. No
		// fsync: see index.go.
		err := unix.Unlinkat(s.refsFd, containerID, 0)
		switch {
		case errors.Is(err, unix.ENOENT) && !known:
			return nil
		case err != nil && !errors.Is(err, unix.ENOENT):
			return fmt.Errorf("releasing the volumes of container %q: %w", containerID, err)
		}
		held := sortedSet(s.idx.ctrs[containerID])
		s.idx.setRefs(containerID, nil)
		if err := s.bump(true); err != nil {
			return err
		}
		s.settleLocked(held)
		return nil
	})
}

// RemovePodVolumes removes the anonymous volumes of pod sandbox
// podSandboxID that no container uses, and returns their names. It finds them
// in the pod's list in .pods; without one, it scans the anonymous volumes of
// every namespace, unless this Store's Reconcile made every list complete.
func (s *Store) RemovePodVolumes(podSandboxID string) (removed []string, err error) {
	if err := validateID("pod sandbox ID", podSandboxID); err != nil {
		return nil, err
	}
	var detached []*Volume
	var trashes []string
	var errs []error
	err = s.withLock(unix.LOCK_EX, func() error {
		listed := s.idx.pods[podSandboxID] != nil
		vols, err := s.podVolumesLocked(podSandboxID, listed)
		if err != nil {
			return err
		}
		keep := map[string]struct{}{}
		for _, v := range vols {
			if len(v.UsedBy) > 0 {
				keep[v.key()] = struct{}{}
				continue
			}
			trash, err := s.detachLocked(v.Namespace, v.Name)
			if err != nil {
				keep[v.key()] = struct{}{}
				errs = append(errs, err)
				continue
			}
			detached = append(detached, v)
			trashes = append(trashes, trash)
		}
		// The list keeps the volumes that stay and nothing else: stale
		// entries go, and a pod whose volumes are all gone has no list.
		if maps.Equal(keep, s.idx.pods[podSandboxID]) && len(detached) == 0 {
			return nil
		}
		for k := range s.idx.pods[podSandboxID] {
			s.idx.dropAnon(k)
		}
		for _, v := range detached {
			s.idx.dropAnon(v.key())
		}
		for k := range keep {
			s.idx.addAnon(podSandboxID, k)
		}
		indexed := true
		if listed || len(keep) > 0 {
			indexed = s.setPodAnon(podSandboxID) == nil
		}
		return s.bump(indexed)
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

// podVolumesLocked returns the anonymous volumes of pod, reading the metadata
// of each to make sure of its owner.
func (s *Store) podVolumesLocked(pod string, listed bool) ([]*Volume, error) {
	var vols []*Volume
	if listed {
		for _, k := range sortedSet(s.idx.pods[pod]) {
			ns, name, _ := strings.Cut(k, "/")
			if v, err := s.getLocked(ns, name); err == nil && ownedBy(v, pod) {
				vols = append(vols, v)
			}
		}
		return vols, nil
	}
	if s.podsComplete {
		return nil, nil
	}
	err := s.scan("", func(ns string, nsFd int, name string) error {
		if !isAnonymousName(name) {
			return nil
		}
		if v, err := s.readVolume(nsFd, ns, name); err == nil && ownedBy(v, pod) {
			vols = append(vols, v)
		}
		return nil
	})
	return vols, err
}

func ownedBy(v *Volume, pod string) bool {
	return v.Anonymous && v.Owner != nil && v.Owner.PodSandboxID == pod
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
// container IDs; a volume missing from refs has none), so .refs holds a list
// for exactly the containers in refs; unless keepAnonymous, unused anonymous
// volumes whose pod is not in livePods are removed; and .pods lists exactly
// the anonymous volumes that remain. It reads every volume's metadata, once
// per plugin start.
func (s *Store) Reconcile(refs map[string][]string, livePods map[string]bool, keepAnonymous bool) error {
	var detached []*Volume
	var trashes []string
	var errs []error
	err := s.withLock(unix.LOCK_EX, func() error {
		var vols []*Volume
		err := s.scan("", func(ns string, nsFd int, name string) error {
			if v, err := s.readVolume(nsFd, ns, name); err == nil {
				vols = append(vols, v)
			}
			return nil
		})
		if err != nil {
			return err
		}
		exists := make(map[string]bool, len(vols))
		for _, v := range vols {
			exists[v.key()] = true
		}
		byCtr := map[string]map[string]struct{}{}
		for key, ids := range refs {
			if !exists[key] {
				continue
			}
			for _, id := range ids {
				if validateID("container ID", id) == nil {
					addToSet(byCtr, id, key)
				}
			}
		}
		x := newIndex()
		ctrLists := make(map[string][]string, len(byCtr))
		for id, keys := range byCtr {
			x.setRefs(id, keys)
			ctrLists[id] = sortedSet(keys)
		}
		refsErr := syncLists(s.refsFd, s.dev, ctrLists)
		if refsErr != nil {
			errs = append(errs, fmt.Errorf("rewriting the references of containers: %w", refsErr))
		}
		s.idx = x
		for _, v := range vols {
			if !v.Anonymous {
				continue
			}
			var pod string
			if v.Owner != nil {
				pod = v.Owner.PodSandboxID
			}
			if !keepAnonymous && len(x.users[v.key()]) == 0 && !livePods[pod] {
				trash, err := s.detachLocked(v.Namespace, v.Name)
				if err == nil {
					detached = append(detached, v)
					trashes = append(trashes, trash)
					continue
				}
				errs = append(errs, err)
			}
			if validateID("pod sandbox ID", pod) == nil {
				x.addAnon(pod, v.key())
			}
		}
		podLists := make(map[string][]string, len(x.pods))
		for pod, keys := range x.pods {
			podLists[pod] = sortedSet(keys)
		}
		podsErr := syncLists(s.podsFd, s.dev, podLists)
		if podsErr != nil {
			errs = append(errs, fmt.Errorf("rewriting the anonymous volumes of pods: %w", podsErr))
		}
		s.podsComplete = podsErr == nil
		if err := s.bump(refsErr == nil && podsErr == nil); err != nil {
			return err
		}
		s.settleMountsLocked()
		return nil
	})
	if err != nil {
		return err
	}
	for i, v := range detached {
		if _, err := s.deleteTrash(v.Namespace, trashes[i], false); err != nil {
			errs = append(errs, volumeError(v.Namespace, v.Name, err))
		}
	}
	return errors.Join(errs...)
}
