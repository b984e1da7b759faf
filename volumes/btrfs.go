package volumes

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
	btrfsQuotaTreeObjectID  = 8
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

func btrfsIoctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

type btrfsSizer struct{}

// prepare makes _data a subvolume, turns quotas on for the file system (a
// no-op once on) and limits the subvolume's qgroup to size.
func (btrfsSizer) prepare(volFd int, size int64) error {
	var args btrfsVolArgs
	copy(args.Name[:], dataDir)
	if err := btrfsIoctl(volFd, btrfsIocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("create btrfs subvolume %s: %w", dataDir, err)
	}
	if err := unix.Fchmodat(volFd, dataDir, 0o755, 0); err != nil {
		return err
	}
	ctl := btrfsQuotaCtlArgs{Cmd: btrfsQuotaCtlEnable}
	if err := btrfsIoctl(volFd, btrfsIocQuotaCtl, unsafe.Pointer(&ctl)); err != nil {
		return fmt.Errorf("enable btrfs quotas: %w", err)
	}
	return btrfsLimit(volFd, size)
}

// btrfsLimit sets the referenced-bytes limit of _data's qgroup; qgroup ID 0
// names the subvolume of the descriptor.
func btrfsLimit(volFd int, size int64) error {
	fd, err := fsx.OpenDir(volFd, dataDir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	lim := btrfsQgroupLimitArgs{Flags: btrfsQgroupLimitMaxRfer, MaxRfer: uint64(size)}
	if err := btrfsIoctl(fd, btrfsIocQgroupLimit, unsafe.Pointer(&lim)); err != nil {
		return fmt.Errorf("limit the btrfs qgroup of %s: %w", dataDir, err)
	}
	return nil
}

func (btrfsSizer) activate(int, string) error   { return nil }
func (btrfsSizer) deactivate(int, string) error { return nil }

func (btrfsSizer) grow(volFd int, _ string, size int64) error { return btrfsLimit(volFd, size) }

// usage reads the referenced bytes of _data's qgroup from the quota tree,
// after committing the transaction that holds the latest writes.
func (btrfsSizer) usage(volFd int) (int64, error) {
	fd, err := fsx.OpenDir(volFd, dataDir)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return 0, err
	}
	lookup := btrfsInoLookupArgs{ObjectID: btrfsFirstFreeObjectID}
	if err := btrfsIoctl(fd, btrfsIocInoLookup, unsafe.Pointer(&lookup)); err != nil {
		return 0, fmt.Errorf("btrfs subvolume ID of %s: %w", dataDir, err)
	}
	var sa btrfsSearchArgs
	sa.Key = btrfsSearchKey{
		TreeID:      btrfsQuotaTreeObjectID,
		MinObjectID: 0, MaxObjectID: 0,
		MinOffset: lookup.TreeID, MaxOffset: lookup.TreeID,
		MaxTransID: ^uint64(0),
		MinType:    btrfsQgroupInfoKey, MaxType: btrfsQgroupInfoKey,
		NrItems: 1,
	}
	if err := btrfsIoctl(fd, btrfsIocTreeSearch, unsafe.Pointer(&sa)); err != nil {
		return 0, fmt.Errorf("read the btrfs qgroup of %s: %w", dataDir, err)
	}
	// One search header (transid, objectid, offset, type, len: 32 bytes),
	// then btrfs_qgroup_info_item: generation, rfer, ...
	const header = 32
	if sa.Key.NrItems < 1 || binary.LittleEndian.Uint32(sa.Buf[24:]) != btrfsQgroupInfoKey {
		return 0, fmt.Errorf("btrfs qgroup of %s not found (quotas off?)", dataDir)
	}
	return int64(binary.LittleEndian.Uint64(sa.Buf[header+8:])), nil
}

// destroySubvolume deletes the btrfs subvolume _data of the volume
// directory name below parent, with its content, if it is one: the store's
// descriptor-relative removal does not cross into it, as it would not into a
// mount.
func destroySubvolume(parent int, name string) error {
	volFd, err := fsx.OpenDir(parent, name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	defer unix.Close(volFd)
	st, err := fsx.Lstat(volFd, dataDir)
	if err != nil || !fsx.IsDir(&st) || st.Ino != btrfsFirstFreeObjectID || !onBtrfs(volFd) {
		return nil
	}
	var args btrfsVolArgs
	copy(args.Name[:], dataDir)
	if err := btrfsIoctl(volFd, btrfsIocSnapDestroy, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("delete btrfs subvolume %s: %w", dataDir, err)
	}
	return nil
}
