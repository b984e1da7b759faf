// What containers do to volumes: acquire them (making what is missing) and
// release them, and the references that record which container uses which
// volume, kept in step with the runtime (SetReferences, RemoveOrphans).

package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// Acquire provides the volumes container containerID asks for and records
// that it uses them: missing volumes are created (named ones with the
// request's Labels, anonymous ones with its Owner), and the volumes join the
// list of containerID in .refs; a volume that exists is not written to.
// Acquiring again for the same container adds to what it holds, so a repeat
// changes nothing and returns the same volumes. The container ID must match
// [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 128 characters), as containerd's do.
// Its wait for the lock is bounded by WithLockTimeout.
//
// Under the same lock it pins each of subs, a directory inside one of the
// named volumes reqs asks for (see pins.go), and returns the pins' paths in
// the order of subs. A subpath is opened below the volume's data without
// following any symlink and must be a directory that exists: it is never
// created; one that cannot be pinned gives a *SubpathError.
//
// It is all-or-nothing: on any error it removes the volumes it created,
// leaves the container's references as they were, and nothing is left
// pinned.
func (s *Store) Acquire(containerID string, reqs []Request, subs []Subpath) ([]*Volume, []string, error) {
	if err := validateID("container ID", containerID); err != nil {
		return nil, nil, err
	}
	wants, err := normalizeRequests(reqs)
	if err != nil {
		return nil, nil, err
	}
	for i, sub := range subs {
		if subs[i].Path, err = ValidateSubpath(sub.Path); err != nil {
			return nil, nil, &SubpathError{Subpath: sub, Err: err}
		}
	}
	what := acquiring(containerID, wants)
	// Images of new sized volumes are formatted before the lock is taken.
	if err := s.prepareFormats(what, wants, true); err != nil {
		return nil, nil, err
	}
	var vols []*Volume
	var pins []string
	err = s.withRequestLock(what, func() error {
		var err error
		vols, pins, err = s.acquireLocked(containerID, wants, subs)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return vols, pins, nil
}

// acquiring says, for a lock wait that ran out, what Acquire was for.
func acquiring(containerID string, wants []Request) string {
	keys := make([]string, len(wants))
	for i, r := range wants {
		keys[i] = volumeKey(r.Namespace, r.Name)
	}
	return fmt.Sprintf("acquiring volume(s) %s for container %q", strings.Join(keys, ", "), containerID)
}

// normalizeRequests validates reqs, names anonymous ones and drops repeats.
func normalizeRequests(reqs []Request) ([]Request, error) {
	seen := make(map[string]bool, len(reqs))
	out := make([]Request, 0, len(reqs))
	for _, r := range reqs {
		if err := ValidateNamespace(r.Namespace); err != nil {
			return nil, err
		}
		if err := r.CreateOptions.validate(); err != nil {
			return nil, err
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
			if err := ValidateNamedVolume(r.Name); err != nil {
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

// acquireLocked is Acquire under the store's lock. Each change it makes on
// disk (a pod's list, a new volume, an activation, a pin, the container's
// list) records its undo in one undo log as it is made, so that a failure at
// any step leaves the store as it was. The steps stay in one function because
// they share that log and the volumes they gather.
func (s *Store) acquireLocked(id string, wants []Request, subs []Subpath) ([]*Volume, []string, error) {
	var undo undoLog
	var pins []string
	created := 0
	savedPods := map[string]bool{} // pods whose list as it was is in the log
	before := s.idx.ctrs[id]
	rollback := func(cause error) error {
		err := undo.rollback(cause)
		// The index may be ahead of the disk now: the next operation
		// rebuilds it.
		s.idx = nil
		return errors.Join(err, s.bump(false))
	}
	deactivate := func(v *Volume) func() error {
		return func() error {
			if len(s.idx.users[v.key()]) == 0 {
				return s.deactivateLocked(v)
			}
			return nil
		}
	}
	keys := maps.Clone(before)
	if keys == nil {
		keys = make(map[string]struct{}, len(wants))
	}
	vols := make([]*Volume, 0, len(wants))
	for _, r := range wants {
		v, err := s.getLocked(r.Namespace, r.Name)
		if errors.Is(err, errBroken) && r.Owner == nil && s.removeUnfinished(r.Namespace, r.Name) {
			err = fs.ErrNotExist
		}
		switch {
		case isAbsent(err) && r.MustExist:
			return nil, nil, rollback(&OpError{Namespace: r.Namespace, Name: r.Name,
				Err: fmt.Errorf("%w: it is external (external: true) and does not exist on this node", ErrNotFound)})
		case isAbsent(err):
			v = newVolume(r.Namespace, r.Name, r.CreateOptions, r.Owner)
			v.PersistLater = r.PersistLater && r.Owner == nil
			if r.Owner != nil {
				// The pod's list names the volume before it appears, so
				// RemovePodVolumes finds it whenever the process dies.
				pod := r.Owner.PodSandboxID
				if !savedPods[pod] {
					savedPods[pod] = true
					keys := sortedSet(s.idx.pods[pod])
					undo.add(func() error { return writeList(s.podsFd, pod, keys) })
				}
				s.idx.addAnon(pod, v.key())
				if err := s.setPodAnon(pod); err != nil {
					return nil, nil, rollback(fmt.Errorf("anonymous volumes of pod sandbox %q: %w", pod, err))
				}
			}
			if err := s.createLocked(v, true); err != nil {
				return nil, nil, rollback(err)
			}
			v.Created = true
			created++
			undo.add(func() error { return s.discardLocked(v) })
			if v.Limit > 0 && s.isMountedLocked(v.Namespace, v.Name) {
				undo.add(deactivate(v)) // made from a mounted image
			}
		case err != nil:
			return nil, nil, rollback(publicError(r.Namespace, r.Name, err))
		case r.Owner != nil && !v.Anonymous:
			return nil, nil, rollback(&OpError{Namespace: r.Namespace, Name: r.Name, Anonymous: true, Err: fmt.Errorf("%w: a named volume has that name", ErrExists)})
		default:
			if err := importRunning(s.dirFd, r.Namespace, r.Name); err != nil {
				return nil, nil, rollback(err)
			}
		}
		keys[v.key()] = struct{}{}
		vols = append(vols, v)
	}
	// Sized volumes come up on use, so after a reboot, which unmounts
	// everything, the next container gets its volume back; before any
	// subpath is looked up in them.
	for _, v := range vols {
		if v.Limit == 0 || s.isMountedLocked(v.Namespace, v.Name) {
			continue
		}
		if err := s.activateLocked(v); err != nil {
			return nil, nil, rollback(err)
		}
		undo.add(deactivate(v))
	}
	for _, sub := range subs {
		i := slices.IndexFunc(vols, func(v *Volume) bool { return v.key() == volumeKey(sub.Namespace, sub.Name) && !v.Anonymous })
		if i < 0 {
			return nil, nil, rollback(&SubpathError{Subpath: sub, Err: fmt.Errorf("%w: not a named volume of the request", ErrInvalid)})
		}
		p, err := s.pins.pinSubpathLocked(id, sub, vols[i])
		if err != nil {
			return nil, nil, rollback(&SubpathError{Subpath: sub, Err: err})
		}
		if len(pins) == 0 {
			undo.add(func() error { return s.pins.unpinLocked(id) })
		}
		pins = append(pins, p)
	}
	if len(keys) == len(before) && created == 0 {
		return vols, pins, nil // a repeat: the container holds every volume already
	}
	if len(keys) != len(before) {
		// Recorded first: a write cut short may leave the list changed.
		undo.add(func() error { return writeList(s.refsFd, id, sortedSet(before)) })
		if err := s.writeListLocked(s.refsFd, id, sortedSet(keys)); err != nil {
			return nil, nil, rollback(fmt.Errorf("references of container %q: %w", id, err))
		}
	}
	if err := s.bump(true); err != nil {
		return nil, nil, rollback(err)
	}
	s.idx.setRefs(id, keys)
	for _, v := range vols {
		v.UsedBy = s.idx.usedBy(v.key())
	}
	return vols, pins, nil
}

// getLocked reads one volume; see readVolume for its errors.
func (s *Store) getLocked(ns, name string) (*Volume, error) {
	nsFd, err := fsx.OpenDir(s.dirFd, ns)
	if err != nil {
		return nil, err
	}
	defer unix.Close(nsFd)
	return s.readVolume(nsFd, ns, name)
}

// discardLocked removes a volume without the in-use checks of detach:
// Acquire uses it to undo a volume it has just made, which holds no data yet.
func (s *Store) discardLocked(v *Volume) error {
	ns, name := v.Namespace, v.Name
	nsFd, err := fsx.OpenDir(s.dirFd, ns)
	if err != nil {
		return publicError(ns, name, err)
	}
	defer unix.Close(nsFd)
	trash, err := s.unnameLocked(nsFd, ns, name, v.Limit)
	if err != nil {
		return err
	}
	_, err = reapEntry(s.trashFd, trash, s.dev, true, false)
	return err
}

// Release records that container containerID no longer uses any volume: it
// removes the container's list from .refs. For a container that holds
// nothing it writes nothing. A sized volume it was the last user of is
// deactivated (its file system unmounted), best effort. Its wait for the
// lock is bounded by WithLockTimeout.
func (s *Store) Release(containerID string) error {
	if err := validateID("container ID", containerID); err != nil {
		return err
	}
	what := fmt.Sprintf("releasing the volumes of container %q", containerID)
	return s.withRequestLock(what, func() error {
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
// podSandboxID that no container uses, and returns their names. It finds
// them in the pod's list in .pods, which Acquire writes before it makes an
// anonymous volume; volumes whose list a crash lost are RemoveOrphans' work.
// It only moves the volumes into the trash, which the reaper empties (see
// Reaper), and its wait for the lock is bounded by WithLockTimeout: it
// runs inside an NRI request.
func (s *Store) RemovePodVolumes(podSandboxID string) (removed []string, err error) {
	if err := validateID("pod sandbox ID", podSandboxID); err != nil {
		return nil, err
	}
	var errs []error
	what := fmt.Sprintf("removing the anonymous volumes of pod sandbox %q", podSandboxID)
	var d *detacher
	err = s.withRequestLock(what, func() error {
		listed := s.idx.pods[podSandboxID]
		if listed == nil {
			return nil
		}
		var err error
		if d, err = s.newDetacher(); err != nil {
			return err
		}
		keep := map[string]struct{}{}
		var detached []string
		for _, k := range sortedSet(listed) {
			ns, name, _ := strings.Cut(k, "/")
			v, err := s.getLocked(ns, name)
			if err != nil || !ownedBy(v, podSandboxID) {
				continue // a stale entry: the list drops it
			}
			if len(v.UsedBy) > 0 {
				keep[k] = struct{}{}
				continue
			}
			if _, err := d.detach(ns, name); err != nil {
				keep[k] = struct{}{}
				errs = append(errs, err)
				continue
			}
			detached = append(detached, k)
			removed = append(removed, name)
		}
		if len(detached) > 0 {
			s.kickReaper()
		}
		// The list keeps the volumes that stay and nothing else: stale
		// entries go, and a pod whose volumes are all gone has no list.
		if maps.Equal(keep, listed) {
			return nil
		}
		for k := range listed {
			s.idx.dropAnon(k)
		}
		for k := range keep {
			s.idx.addAnon(podSandboxID, k)
		}
		return s.bump(s.setPodAnon(podSandboxID) == nil)
	})
	if err != nil {
		return nil, err
	}
	if d != nil {
		errs = append(errs, d.sync())
	}
	return removed, errors.Join(errs...)
}

func ownedBy(v *Volume, pod string) bool {
	return v.Anonymous && v.Owner != nil && v.Owner.PodSandboxID == pod
}

// SetReferences makes the users of every volume exactly refs (volume key
// "NS/NAME" to container IDs; a volume missing from refs has none), so that
// .refs holds a list for exactly the containers in refs that use an existing
// volume. The plugin calls it from Synchronize after a restart: it reads one
// small list per container and looks up each referenced volume, never the
// whole store, and its wait for the lock is bounded by WithLockTimeout.
func (s *Store) SetReferences(refs map[string][]string) error {
	what := fmt.Sprintf("recording the volumes of %d containers", len(refs))
	return s.withRequestLock(what, func() error {
		byCtr := map[string]map[string]struct{}{}
		for key, ids := range refs {
			ns, name, ok := strings.Cut(key, "/")
			if !ok || !s.existsLocked(ns, name) {
				continue
			}
			for _, id := range ids {
				if validateID("container ID", id) == nil {
					addToSet(byCtr, id, key)
				}
			}
		}
		ctrLists := make(map[string][]string, len(byCtr))
		for id, keys := range byCtr {
			ctrLists[id] = sortedSet(keys)
		}
		var errs []error
		if err := syncLists(s.refsFd, s.dev, ctrLists, s.idx.ctrs); err != nil {
			errs = append(errs, fmt.Errorf("rewriting the references of containers: %w", err))
		}
		x := newIndex()
		x.pods, x.owner = s.idx.pods, s.idx.owner
		for id, keys := range byCtr {
			x.setRefs(id, keys)
		}
		s.idx = x
		errs = append(errs, s.bump(len(errs) == 0))
		return errors.Join(errs...)
	})
}

// existsLocked reports whether volume name of namespace ns is a directory
// in the store, valid names provided.
func (s *Store) existsLocked(ns, name string) bool {
	if ValidateNamespace(ns) != nil || ValidateName(name) != nil {
		return false
	}
	st, err := fsx.Lstat(s.dirFd, ns+"/"+name)
	return err == nil && fsx.IsDir(&st)
}

// RemoveOrphans removes, unless keepAnonymous, the unused anonymous volumes
// whose pod sandbox is gone (live reports which are not), and rewrites .pods
// so that it lists every anonymous volume that remains: it catches what
// RemovePodVolumes could not, the volumes of pods removed while the plugin
// was down and lists a crash of the node lost. It returns the names of the
// volumes it removed, as NS/NAME.
//
// It reads the metadata of every anonymous volume, which takes seconds in a
// big store, so the plugin runs it in the background after Synchronize: it
// reads without the lock, decides under the lock in short batches (live is
// called then, and must not call the store), leaves the data to the reaper,
// and waits for the lock as long as it takes.
func (s *Store) RemoveOrphans(live func(podSandboxID string) bool, keepAnonymous bool) (removed []string, err error) {
	anon, err := s.scanAnonymous()
	if err != nil {
		return nil, err
	}
	scanned := make(map[string]bool, len(anon))
	for _, v := range anon {
		scanned[v.key()] = true
	}
	pods := map[string]map[string]struct{}{}
	err = s.detachInBatches(len(anon), func(d *detacher, i int) (string, error) {
		v := anon[i]
		pod := v.Owner.PodSandboxID
		var err error
		if !keepAnonymous && len(s.idx.users[v.key()]) == 0 && !live(pod) {
			_, err = d.detach(v.Namespace, v.Name)
			switch {
			case err == nil:
				removed = append(removed, v.key())
				return v.key(), nil
			case isAbsent(err) || errors.Is(err, ErrNotFound):
				return "", nil // removed meanwhile
			}
		}
		if validateID("pod sandbox ID", pod) == nil {
			addToSet(pods, pod, v.key()) // stays: listed for its pod
		}
		return "", err
	})
	if err != nil {
		return removed, err
	}
	return removed, s.rewritePods(pods, scanned)
}

// scanAnonymous reads, without the lock, the metadata of every anonymous
// volume of the store that names its owner.
func (s *Store) scanAnonymous() ([]*Volume, error) {
	dirFd, err := s.openStoreDir()
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirFd)
	var anon []*Volume
	err = scanAt(dirFd, "", func(ns string, nsFd int, name string) error {
		if !isAnonymousName(name) {
			return nil
		}
		if v, err := s.loadVolume(nsFd, ns, name); err == nil && v.Anonymous && v.Owner != nil {
			anon = append(anon, v)
		}
		return nil
	})
	return anon, err
}

// rewritePods rewrites .pods, under the lock, to list pods: the anonymous
// volumes RemoveOrphans kept of those it scanned, and what Acquire made
// since the scan; and settles the mounts of sized volumes the removals left
// unused.
func (s *Store) rewritePods(pods map[string]map[string]struct{}, scanned map[string]bool) error {
	var errs []error
	// What Acquire made since the scan stays listed; entries for volumes
	// that do not exist go.
	err := s.withLock(unix.LOCK_EX, func() error {
		for pod, keys := range s.idx.pods {
			for k := range keys {
				ns, name, _ := strings.Cut(k, "/")
				if !scanned[k] && s.existsLocked(ns, name) {
					addToSet(pods, pod, k)
				}
			}
		}
		podLists := make(map[string][]string, len(pods))
		x := newIndex()
		x.ctrs, x.users = s.idx.ctrs, s.idx.users
		for pod, keys := range pods {
			podLists[pod] = sortedSet(keys)
			for k := range keys {
				x.addAnon(pod, k)
			}
		}
		podsErr := syncLists(s.podsFd, s.dev, podLists, s.idx.pods)
		s.idx = x
		if podsErr != nil {
			errs = append(errs, fmt.Errorf("rewriting the anonymous volumes of pods: %w", podsErr))
		}
		if err := s.bump(podsErr == nil); err != nil {
			return err
		}
		if all, err := fsx.MountPoints(); err == nil {
			s.settleMountsLocked(all)
		}
		return nil
	})
	return errors.Join(append([]error{err}, errs...)...)
}
