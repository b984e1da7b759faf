package sizer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// The btrfs backend: when ROOT is on btrfs, _data is a subvolume whose
// qgroup has a limit on referenced bytes; writes past it get EDQUOT. Nothing
// needs mounting, so activating and deactivating are no-ops and a reboot
// changes nothing. The ioctls are those of linux/btrfs.h, which x/sys does
// not carry.
const (
	btrfsIocSubvolCreate = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsIocSnapDestroy  = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	btrfsIocTreeSearch   = 0xd0009411 // _IOWR(0x94, 17, struct btrfs_ioctl_search_args)
	btrfsIocInoLookup    = 0xd0009412 // _IOWR(0x94, 18, struct btrfs_ioctl_ino_lookup_args)
	btrfsIocQuotaCtl     = 0xc0109428 // _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
	btrfsIocQgroupLimit  = 0x8030942b // _IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)

	btrfsQuotaCtlEnable     = 1
	btrfsQgroupLimitMaxRfer = 1
	btrfsRootTreeObjectID   = 1
	btrfsQuotaTreeObjectID  = 8
	btrfsRootRefKey         = 156
	btrfsQgroupInfoKey      = 242
	// btrfsFirstFreeObjectID is the inode number of a subvolume's root.
	btrfsFirstFreeObjectID = 256
)

type btrfsVolArgs struct {
	Fd   int64
	Name [4088]byte
}

type btrfsQuotaCtlArgs struct {
	Cmd, Status uint64
}

type btrfsQgroupLimitArgs struct {
	QgroupID                                  uint64
	Flags, MaxRfer, MaxExcl, RsvRfer, RsvExcl uint64
}

type btrfsInoLookupArgs struct {
	TreeID, ObjectID uint64
	Name             [4080]byte
}

type btrfsSearchKey struct {
	TreeID, MinObjectID, MaxObjectID, MinOffset, MaxOffset, MinTransID, MaxTransID uint64
	MinType, MaxType, NrItems, _                                                   uint32
	_                                                                              [4]uint64
}

type btrfsSearchArgs struct {
	Key btrfsSearchKey
	Buf [4096 - unsafe.Sizeof(btrfsSearchKey{})]byte
}

// Btrfs is the legacy btrfs backend: a subvolume under a qgroup limit,
// which a pod can step out of (see the store's sized.go); kept to serve the
// volumes an earlier release made.
type Btrfs struct{}

// Prepare makes _data a subvolume, turns quotas on for the file system (a
// no-op once on) and limits the subvolume's qgroup to size.
func (Btrfs) Prepare(volFd int, size int64) error {
	var args btrfsVolArgs
	copy(args.Name[:], DataDir)
	if err := fsx.IoctlPtr(volFd, btrfsIocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("create btrfs subvolume %s: %w", DataDir, err)
	}
	if err := unix.Fchmodat(volFd, DataDir, 0o755, 0); err != nil {
		return err
	}
	ctl := btrfsQuotaCtlArgs{Cmd: btrfsQuotaCtlEnable}
	if err := fsx.IoctlPtr(volFd, btrfsIocQuotaCtl, unsafe.Pointer(&ctl)); err != nil {
		return fmt.Errorf("enable btrfs quotas: %w", err)
	}
	return btrfsLimit(volFd, size)
}

// btrfsLimit sets the referenced-bytes limit of _data's qgroup; qgroup ID 0
// names the subvolume of the descriptor.
func btrfsLimit(volFd int, size int64) error {
	fd, err := fsx.OpenDir(volFd, DataDir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	lim := btrfsQgroupLimitArgs{Flags: btrfsQgroupLimitMaxRfer, MaxRfer: uint64(size)}
	if err := fsx.IoctlPtr(fd, btrfsIocQgroupLimit, unsafe.Pointer(&lim)); err != nil {
		return fmt.Errorf("limit the btrfs qgroup of %s: %w", DataDir, err)
	}
	return nil
}

// Activate does nothing: a subvolume needs no mounting.
func (Btrfs) Activate(int, string) error { return nil }

// Deactivate does nothing, as Activate.
func (Btrfs) Deactivate(int, string) error { return nil }

// Grow raises the qgroup's limit to size.
func (Btrfs) Grow(volFd int, _ string, size int64) error { return btrfsLimit(volFd, size) }

// Usage adds up the referenced bytes of the qgroups of _data and of every
// subvolume nested in it (a pod may make them; their bytes are in no qgroup
// of _data's), after committing the transaction that holds the latest
// writes. It reads the quota and root trees, never walks the data.
func (Btrfs) Usage(volFd int) (int64, error) {
	fd, err := fsx.OpenDir(volFd, DataDir)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return 0, err
	}
	lookup := btrfsInoLookupArgs{ObjectID: btrfsFirstFreeObjectID}
	if err := fsx.IoctlPtr(fd, btrfsIocInoLookup, unsafe.Pointer(&lookup)); err != nil {
		return 0, fmt.Errorf("btrfs subvolume ID of %s: %w", DataDir, err)
	}
	var total int64
	for todo := []uint64{lookup.TreeID}; len(todo) > 0; {
		id := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		rfer, err := btrfsReferenced(fd, id)
		if err != nil {
			return 0, err
		}
		total += rfer
		err = btrfsSearch(fd, btrfsRootTreeObjectID, id, btrfsRootRefKey, 0, ^uint64(0), func(offset uint64, _ []byte) {
			todo = append(todo, offset) // a ROOT_REF's offset is the child's ID
		})
		if err != nil {
			return 0, fmt.Errorf("list the btrfs subvolumes in %s: %w", DataDir, err)
		}
	}
	return total, nil
}

// btrfsReferenced reads the referenced bytes of the level-0 qgroup of
// subvolume id from the quota tree.
func btrfsReferenced(fd int, id uint64) (int64, error) {
	var rfer int64
	found := false
	err := btrfsSearch(fd, btrfsQuotaTreeObjectID, 0, btrfsQgroupInfoKey, id, id, func(_ uint64, item []byte) {
		// btrfs_qgroup_info_item: generation, rfer, ...
		if len(item) >= 16 {
			rfer, found = int64(binary.LittleEndian.Uint64(item[8:])), true
		}
	})
	if err != nil {
		return 0, fmt.Errorf("read the btrfs qgroup 0/%d: %w", id, err)
	}
	if !found {
		return 0, fmt.Errorf("btrfs qgroup 0/%d not found (quotas off?)", id)
	}
	return rfer, nil
}

// btrfsSearch calls fn with the offset and data of each item of tree whose
// key has objectid, typ and an offset from lo to hi (BTRFS_IOC_TREE_SEARCH,
// a buffer at a time).
func btrfsSearch(fd int, tree, objectid uint64, typ uint32, lo, hi uint64, fn func(offset uint64, item []byte)) error {
	const header = 32 // transid, objectid, offset, type, len
	var sa btrfsSearchArgs
	for {
		sa.Key = btrfsSearchKey{
			TreeID:      tree,
			MinObjectID: objectid, MaxObjectID: objectid,
			MinOffset: lo, MaxOffset: hi,
			MaxTransID: ^uint64(0),
			MinType:    typ, MaxType: typ,
			NrItems: 4096,
		}
		if err := fsx.IoctlPtr(fd, btrfsIocTreeSearch, unsafe.Pointer(&sa)); err != nil {
			return err
		}
		if sa.Key.NrItems == 0 {
			return nil
		}
		pos := 0
		var offset uint64
		for i := uint32(0); i < sa.Key.NrItems && pos+header <= len(sa.Buf); i++ {
			h := sa.Buf[pos:]
			offset = binary.LittleEndian.Uint64(h[16:])
			n := int(binary.LittleEndian.Uint32(h[28:]))
			if pos+header+n > len(sa.Buf) {
				return fmt.Errorf("tree search: item of %d bytes past the buffer", n)
			}
			if binary.LittleEndian.Uint32(h[24:]) == typ {
				fn(offset, h[header:header+n])
			}
			pos += header + n
		}
		if offset >= hi {
			return nil
		}
		lo = offset + 1
	}
}

// DestroySubvolume deletes the btrfs subvolume _data of the volume
// directory name below parent, with its content, if it is one: one ioctl
// instead of a walk. A subvolume with subvolumes inside (a pod may make
// them: the ioctl needs no capability) is left to the caller's walk, which
// deletes nested subvolumes depth first; btrfs refuses to delete it whole.
func DestroySubvolume(parent int, name string) error {
	volFd, err := fsx.OpenDir(parent, name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer unix.Close(volFd)
	dfd, err := fsx.OpenDir(volFd, DataDir)
	if err != nil {
		return nil
	}
	st, err := fsx.Fstat(dfd)
	nested := err == nil && fsx.NestedSubvolume(volFd, dfd, &st)
	unix.Close(dfd)
	if !nested {
		return nil
	}
	var args btrfsVolArgs
	copy(args.Name[:], DataDir)
	err = fsx.IoctlPtr(volFd, btrfsIocSnapDestroy, unsafe.Pointer(&args))
	if err != nil && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("delete btrfs subvolume %s: %w", DataDir, err)
	}
	return nil
}
