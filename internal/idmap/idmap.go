// Package idmap holds what nri-volumes needs for containers with a user
// namespace: the check that a file system can be idmapped, which runc does
// for the volumes of such containers, and the translation of ids as the host
// sees them into ids as the container sees them, which copy-up writes.
//
// Check caches its answers per file system type and is safe for concurrent
// use.
package idmap

import (
	"errors"
	"fmt"
	"os"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by Check's error for a file system that cannot
// be idmapped.
var ErrUnsupported = errors.New("the file system cannot do idmapped mounts")

// ErrNoUserNS is wrapped by Check's error when the user namespace to probe
// with cannot be opened: a plugin in a container without the host's PID
// namespace does not see the pod's /proc/PID/ns/user.
var ErrNoUserNS = errors.New("cannot open the user namespace to check idmapped mounts with")

// supported caches, per statfs f_type, whether that file system type can be
// idmapped: the kernel decides it per type (FS_ALLOW_IDMAP).
var supported sync.Map

// Check reports whether dir's file system can be idmapped, as runc will do
// for a bind mount with the idmap or ridmap option: it clones the mount of
// dir (open_tree) and sets MOUNT_ATTR_IDMAP on the clone, with the user
// namespace at usernsPath, then drops the clone, which was never attached
// anywhere. The answer is remembered for dir's file system type. An error
// that is not about the file system (no such user namespace, no privilege)
// is returned as it is and not remembered.
func Check(dir, usernsPath string) error {
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	return check(&sfs, unix.AT_FDCWD, dir, dir, usernsPath)
}

// CheckFile is Check for the file or directory open at f (an O_PATH
// descriptor will do), named name in messages: it probes that very object,
// never a path that could since lead elsewhere.
func CheckFile(f *os.File, name, usernsPath string) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err != nil {
		return &os.PathError{Op: "fstatfs", Path: name, Err: err}
	}
	return check(&sfs, int(f.Fd()), "", name, usernsPath)
}

// check probes, unless cached, the file system sfs of what dirfd and path
// name (an empty path: dirfd itself).
func check(sfs *unix.Statfs_t, dirfd int, path, dir, usernsPath string) error {
	if ok, known := supported.Load(sfs.Type); known {
		if ok.(bool) {
			return nil
		}
		return unsupported(dir, sfs.Type)
	}
	err := probe(dirfd, path, dir, usernsPath)
	switch {
	case err == nil:
		supported.Store(sfs.Type, true)
		return nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		supported.Store(sfs.Type, false)
		return unsupported(dir, sfs.Type)
	}
	return fmt.Errorf("checking that %s can be idmapped: %w", dir, err)
}

func unsupported(dir string, fsType int64) error {
	return fmt.Errorf("%w: %s is on %s, which cannot be idmapped by this kernel, and a container with a user namespace gets its volumes as idmapped mounts",
		ErrUnsupported, dir, fsName(fsType))
}

func probe(dirfd int, path, dir, usernsPath string) error {
	ns, err := unix.Open(usernsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrNoUserNS, usernsPath, err)
	}
	defer unix.Close(ns)
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC
	if path == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	tree, err := unix.OpenTree(dirfd, path, uint(flags))
	if err != nil {
		return &os.PathError{Op: "open_tree", Path: dir, Err: err}
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns)}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return &os.PathError{Op: "mount_setattr(MOUNT_ATTR_IDMAP)", Path: dir, Err: err}
	}
	return nil
}

// fsName names the common file system types, for messages.
func fsName(t int64) string {
	names := map[int64]string{
		unix.EXT4_SUPER_MAGIC: "ext4", unix.XFS_SUPER_MAGIC: "xfs", unix.BTRFS_SUPER_MAGIC: "btrfs",
		unix.TMPFS_MAGIC: "tmpfs", unix.RAMFS_MAGIC: "ramfs", unix.NFS_SUPER_MAGIC: "nfs",
		unix.OVERLAYFS_SUPER_MAGIC: "overlayfs", unix.FUSE_SUPER_MAGIC: "fuse",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("a file system of type %#x", t)
}

// overflowID is the id the kernel shows for a host id that a user namespace
// does not map (/proc/sys/kernel/overflowuid, 65534 unless changed).
const overflowID = 65534

// Mapping is a container's user namespace mappings, as its OCI spec gives
// them (linux.uidMappings and linux.gidMappings).
type Mapping struct {
	UIDs, GIDs []specs.LinuxIDMapping
}

// FromSpec returns the user namespace mappings of spec, or nil when the
// container has no user namespace of its own.
func FromSpec(spec *specs.Spec) (*Mapping, error) {
	if spec.Linux == nil {
		return nil, nil
	}
	userns := false
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			userns = true
		}
	}
	if !userns {
		return nil, nil
	}
	if len(spec.Linux.UIDMappings) == 0 || len(spec.Linux.GIDMappings) == 0 {
		return nil, errors.New("the container has a user namespace but its OCI spec has no uidMappings or gidMappings")
	}
	return &Mapping{UIDs: spec.Linux.UIDMappings, GIDs: spec.Linux.GIDMappings}, nil
}

// ToContainer translates a host uid and gid into the ids the container
// sees: the overflow id for one that its namespace does not map.
func (m *Mapping) ToContainer(uid, gid uint32) (uint32, uint32) {
	return toContainer(m.UIDs, uid), toContainer(m.GIDs, gid)
}

func toContainer(maps []specs.LinuxIDMapping, host uint32) uint32 {
	for _, r := range maps {
		if host >= r.HostID && uint64(host) < uint64(r.HostID)+uint64(r.Size) {
			return r.ContainerID + (host - r.HostID)
		}
	}
	return overflowID
}
