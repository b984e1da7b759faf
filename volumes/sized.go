package volumes

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Sized volumes. A volume created with a size has it enforced by the kernel
// through a backend, chosen when the volume is created and recorded in its
// volume.json with the size (Volume.Backend, Volume.Limit):
//
//   - image: _data is the mount point of an ext4 file system held in the
//     sparse file disk.img beside it, on a loop device; any host file system.
//   - btrfs: _data is a btrfs subvolume with a qgroup limit; ROOT on btrfs.
//     A pod can step out of it: a subvolume it makes inside its volume
//     (BTRFS_IOC_SUBVOL_CREATE needs no capability) gets a qgroup of its own,
//     under no limit of the volume's, and nothing can forbid the ioctl or
//     put the new qgroup under the volume's. So no configuration picks it
//     for new volumes any more; the store keeps serving (measuring, growing,
//     removing) the btrfs volumes an earlier release made.
//
// Project quotas (XFS, ext4) would be one more backend behind the same seam.
// A backend's work happens under the store's exclusive lock, like every other
// mutation: preparing at creation, activating when a container acquires the
// volume (so after a reboot the next use brings it back), deactivating when
// its last user goes and before removal.

// SizePolicy is how the store makes sized volumes.
type SizePolicy struct {
	// Backend for new sized volumes; "" or BackendAuto picks one by ROOT's
	// file system.
	Backend Backend
	// NamespaceBytes bounds the sum of the sizes of one namespace's volumes
	// (limits.namespaceBytes); 0: no bound.
	NamespaceBytes int64
	// Overcommit bounds the sum of the sizes of every volume of the store
	// to this multiple of its file system's size (limits.overcommit); 0: no
	// bound. Sparse images and qgroups reserve nothing, so without it the
	// sizes promise more than the disk holds.
	Overcommit float64
}

// pickBackend resolves the policy's backend for the store's file system.
// Auto never picks btrfs: its limit does not hold against a pod that makes
// a subvolume inside its volume.
func (s *Store) pickBackend() (Backend, error) {
	b := s.policy.Backend
	if b == "" || b == BackendAuto {
		return BackendImage, nil
	}
	if b == BackendBtrfs && !sizer.OnBtrfs(s.dirFd) {
		return "", fmt.Errorf("%w: sizes.backend is btrfs, but the store %s is not on btrfs", ErrInvalid, s.dir)
	}
	return b, nil
}

// checkBudgetLocked refuses size more bytes of sized volumes in namespace
// ns when they would take the namespace over its budget
// (limits.namespaceBytes, which its snapshots count against too) or the
// node over its bound (limits.overcommit times the size of the store's file
// system). Both come from the ledger: O(1), whatever the number of volumes.
func (s *Store) checkBudgetLocked(ns string, size int64) error {
	if size <= 0 {
		return nil
	}
	if max := s.policy.NamespaceBytes; max > 0 {
		sum := s.idx.sizes.namespaceBytes(ns)
		if sum+size > max {
			return fmt.Errorf("namespace %q: %w: a volume of %s would bring the sizes of its volumes and what their snapshots hold to %s, above limits.namespaceBytes %s (%s in use)",
				ns, ErrLimit, FormatBytes(size), FormatBytes(sum+size), FormatBytes(max), FormatBytes(sum))
		}
	}
	if s.policy.Overcommit <= 0 {
		return nil
	}
	fsSize, err := s.fileSystemSize()
	if err != nil {
		return err
	}
	max := s.policy.nodeBytes(fsSize)
	sum := s.idx.sizes.total.Bytes
	if sum+size > max {
		return fmt.Errorf("namespace %q: %w: a volume of %s would bring the sizes of the node's volumes to %s, above limits.overcommit %g times the %s of the store's file system (%s; %s in use)",
			ns, ErrLimit, FormatBytes(size), FormatBytes(sum+size), s.policy.Overcommit, FormatBytes(fsSize), FormatBytes(max), FormatBytes(sum))
	}
	return nil
}

// nodeBytes is the bound on the sum of the sizes of the node's volumes for
// a store on a file system of fsSize bytes; 0: none.
func (p SizePolicy) nodeBytes(fsSize int64) int64 {
	if p.Overcommit <= 0 {
		return 0
	}
	f := float64(fsSize) * p.Overcommit
	if f >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(f)
}

// fileSystemSize is the size of the file system that holds the store.
func (s *Store) fileSystemSize() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(s.dirFd, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	return int64(st.Blocks) * st.Bsize, nil
}

// activateLocked brings a sized volume's file system up at _data.
func (s *Store) activateLocked(v *Volume) error {
	if v.Limit == 0 {
		return nil
	}
	return s.withVolumeDir(v, func(z sizer.Sizer, volFd int, volPath string) error {
		if err := z.Activate(volFd, volPath); err != nil {
			return err
		}
		return freshRootAttrs(volFd, v)
	})
}

// freshRootAttrs gives a sized volume's own file system root the owner and
// mode the volume was created with, while that root is still fresh: empty,
// never copied into and never chowned for a container. A new image file
// system's root is root's, mode 0755, whatever the mount point had.
func freshRootAttrs(volFd int, v *Volume) error {
	if (v.UID == nil && v.GID == nil && v.Mode == "") || v.Chowned != nil {
		return nil
	}
	if done, err := existsAt(volFd, copyUpDone); err != nil || done {
		return err
	}
	fd, err := fsx.OpenDir(volFd, dataDir)
	if err != nil {
		return err
	}
	empty, err := fsx.IsEmptyDir(fd)
	unix.Close(fd)
	if err != nil || !empty {
		return err
	}
	return setRootAttrs(volFd, v)
}

// activeData brings a sized volume's own file system up at _data for an
// operation on its data outside any container (export, import), so the
// operation sees and writes what containers do, not the empty mount point
// below it. The returned func takes the file system down again if no
// container uses the volume by then; call it once the data is closed.
func (s *Store) activeData(ns, name string) (func(), error) {
	var v *Volume
	activated := false
	err := s.withLock(unix.LOCK_EX, func() error {
		var err error
		if v, err = s.getLocked(ns, name); err != nil {
			return publicError(ns, name, err)
		}
		if v.Limit == 0 || s.isMountedLocked(ns, name) {
			return nil
		}
		if err := s.activateLocked(v); err != nil {
			return err
		}
		activated = true
		return nil
	})
	if err != nil || !activated {
		return func() {}, err
	}
	return func() {
		_ = s.withLock(unix.LOCK_EX, func() error {
			s.settleLocked([]string{v.key()})
			return nil
		})
	}, nil
}

// deactivateLocked takes a sized volume's file system down from _data.
func (s *Store) deactivateLocked(v *Volume) error {
	if v.Limit == 0 {
		return nil
	}
	return s.withVolumeDir(v, func(z sizer.Sizer, volFd int, volPath string) error {
		return z.Deactivate(volFd, volPath)
	})
}

func (s *Store) withVolumeDir(v *Volume, fn func(z sizer.Sizer, volFd int, volPath string) error) error {
	z, err := sizerFor(v.Backend)
	if err != nil {
		return volumeError(v.Namespace, v.Name, err)
	}
	volFd, err := fsx.OpenDir(s.dirFd, v.Namespace+"/"+v.Name)
	if err != nil {
		return publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(volFd)
	if err := fn(z, volFd, filepath.Join(s.dir, v.Namespace, v.Name)); err != nil {
		return volumeError(v.Namespace, v.Name, sizerError(err))
	}
	return nil
}

// sizerError classifies a backend's error: a file system that something
// holds mounted is ErrInUse.
func sizerError(err error) error {
	var busy *sizer.BusyError
	if errors.As(err, &busy) {
		return fmt.Errorf("%w: %w", ErrInUse, err)
	}
	return err
}

// settleLocked deactivates the sized volumes among keys that no container
// uses any more, so a mounted sized volume is one in use, and anything else
// mounted is a leftover. It is best effort: what stays, Check reports.
func (s *Store) settleLocked(keys []string) {
	for _, k := range keys {
		if len(s.idx.users[k]) > 0 {
			continue
		}
		ns, name, _ := strings.Cut(k, "/")
		if !s.isMountedLocked(ns, name) {
			continue
		}
		if v, err := s.getLocked(ns, name); err == nil && v.Limit > 0 {
			_ = s.deactivateLocked(v)
		}
	}
}

// isMountedLocked reports whether something is mounted at a volume's _data:
// its device differs from the volume directory's.
func (s *Store) isMountedLocked(ns, name string) bool {
	volFd, err := fsx.OpenDir(s.dirFd, ns+"/"+name)
	if err != nil {
		return false
	}
	defer unix.Close(volFd)
	return sizer.IsDataMounted(volFd)
}

// settleMountsLocked deactivates the sized volumes that are mounted but used
// by no container: what a process that died between activating a volume and
// recording its user left. It reads the mount table once and a volume's
// metadata only for such a mount.
func (s *Store) settleMountsLocked(all []string) {
	mounts := fsx.MountsBelow(all, s.dir)
	var keys []string
	for _, mp := range mounts {
		if k, ok := s.dataMountKey(mp); ok {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	if s.idx == nil {
		if err := s.rebuildIndex(); err != nil {
			return
		}
	}
	s.settleLocked(keys)
}

// dataMountKey returns NS/NAME when mount point mp is ROOT/volumes/NS/NAME/_data.
func (s *Store) dataMountKey(mp string) (string, bool) {
	ns, name, ok := splitVolumePath(s.dir, mp, dataDir)
	return volumeKey(ns, name), ok
}

// sizedUsage measures a sized volume through its backend.
func sizedUsage(nsFd int, v *Volume) (int64, error) {
	z, err := sizerFor(v.Backend)
	if err != nil {
		return 0, volumeError(v.Namespace, v.Name, err)
	}
	volFd, err := fsx.OpenDir(nsFd, v.Name)
	if err != nil {
		return 0, publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(volFd)
	used, err := z.Usage(volFd)
	if err != nil {
		return 0, volumeError(v.Namespace, v.Name, err)
	}
	return used, nil
}

// Grow raises the size of the sized volume name of namespace ns to size
// bytes, while containers use it or not. Shrinking is refused: a file
// system cannot give back space its data may hold. The new size counts
// against the namespace's budget like a new volume's.
func (s *Store) Grow(ns, name string, size int64) (*Volume, error) {
	if err := ValidateNamespace(ns); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	var v *Volume
	err := s.withLock(unix.LOCK_EX, func() error {
		nsFd, err := fsx.OpenDir(s.dirFd, ns)
		if err != nil {
			return publicError(ns, name, err)
		}
		defer unix.Close(nsFd)
		v, err = s.readVolume(nsFd, ns, name)
		if err != nil {
			return publicError(ns, name, err)
		}
		switch {
		case v.Limit == 0:
			return volumeError(ns, name, fmt.Errorf("%w: it has no size; only a volume created with a size can grow", ErrInvalid))
		case size < v.Limit:
			return volumeError(ns, name, fmt.Errorf("%w: shrinking from %s to %s is not supported; sizes only grow",
				ErrInvalid, FormatBytes(v.Limit), FormatBytes(size)))
		case size == v.Limit:
			return nil
		}
		if err := s.checkBudgetLocked(ns, size-v.Limit); err != nil {
			return err
		}
		// Charged before the file system grows: see ledger.go.
		old := v.Limit
		if err := s.chargeLocked(ns, size-old, 0, true); err != nil {
			return err
		}
		if err := s.growLocked(nsFd, v, size); err != nil {
			if s.idx != nil {
				_ = s.chargeLocked(ns, old-size, 0, false)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// growLocked grows the backend (a volume in use online, one not in use
// taken down first, as its last user's going would have), then records the
// new size in volume.json, replaced atomically and durably. A crash in
// between leaves a file system larger than recorded, which is harmless, and
// a repeat of the command finishes the job.
func (s *Store) growLocked(nsFd int, v *Volume, size int64) error {
	inUse := len(s.idx.users[v.key()]) > 0
	err := s.withVolumeDir(v, func(z sizer.Sizer, volFd int, volPath string) error {
		var err error
		if inUse {
			err = z.Activate(volFd, volPath)
		} else {
			err = z.Deactivate(volFd, volPath)
		}
		if err != nil {
			return err
		}
		return z.Grow(volFd, volPath, size)
	})
	if err != nil {
		return err
	}
	v.Limit = size
	volFd, err := fsx.OpenDir(nsFd, v.Name)
	if err != nil {
		return publicError(v.Namespace, v.Name, err)
	}
	defer unix.Close(volFd)
	if err := rewriteVolume(volFd, v); err != nil {
		return volumeError(v.Namespace, v.Name, err)
	}
	s.counted(func(c *nsCounts) {
		c.drop(v.Namespace, v.Name)
		c.add(v)
	})
	return s.bump(true)
}
