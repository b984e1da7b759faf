package volumes

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// A volume's metadata on disk: volume.json read and written, its path, and
// the scans of a namespace's volumes. Everything above reads volumes
// through it; it calls nothing above.

// scanAt calls fn for every entry with a valid volume name in namespace ns,
// or in every namespace when ns is "", of the store directory open at dirFd:
// a caller without the lock scans through a descriptor of its own. A
// namespace that does not exist has no volumes.
func scanAt(dirFd int, ns string, fn func(ns string, nsFd int, name string) error) error {
	var nss []string
	if ns != "" {
		nss = []string{ns}
	} else {
		all, err := fsx.ReadDirNames(dirFd)
		if err != nil {
			return fmt.Errorf("read volume store: %w", err)
		}
		for _, n := range all {
			if ValidateNamespace(n) == nil {
				nss = append(nss, n)
			}
		}
		sort.Strings(nss)
	}
	for _, ns := range nss {
		if err := scanNamespace(dirFd, ns, fn); err != nil {
			return err
		}
	}
	return nil
}

// loadVolume is readVolume without UsedBy, for callers that read the store
// without holding its lock: a volume appears complete under its name and its
// volume.json never changes, so that is safe.
func (s *Store) loadVolume(nsFd int, ns, name string) (*Volume, error) {
	volFd, err := fsx.OpenDir(nsFd, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%w: not a directory (or a symlink)", errBroken)
		}
		return nil, fmt.Errorf("%w: %w", errBroken, err)
	}
	defer unix.Close(volFd)
	return s.loadVolumeAt(volFd, ns, name)
}

func (s *Store) loadVolumeAt(volFd int, ns, name string) (*Volume, error) {
	data, err := fsx.ReadFile(volFd, metaFile, maxMetaSize)
	if err != nil {
		return nil, fmt.Errorf("%w: no readable %s: %w", errBroken, metaFile, err)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%w: bad %s: %w", errBroken, metaFile, err)
	}
	st, err := fsx.Lstat(volFd, dataDir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBroken, err)
	}
	if !fsx.IsDir(&st) {
		return nil, fmt.Errorf("%w: %s is not a directory (or a symlink)", errBroken, dataDir)
	}
	if rec.Limit < 0 || rec.Limit > 0 && rec.Backend != BackendImage && rec.Backend != BackendBtrfs {
		return nil, fmt.Errorf("%w: %s: size %d with backend %q", errBroken, metaFile, rec.Limit, rec.Backend)
	}
	v := &Volume{
		Name:       name,
		Namespace:  ns,
		Mountpoint: s.mountpoint(ns, name),
		CreatedAt:  rec.CreatedAt,
		Labels:     rec.Labels,
		Anonymous:  rec.Anonymous,
		Owner:      rec.Owner,
		UID:        rec.UID,
		GID:        rec.GID,
		Mode:       rec.Mode,
		Chowned:    rec.Chowned,
		UsedBy:     []string{},
		Limit:      rec.Limit,
		Backend:    rec.Backend,
		Inodes:     rec.Inodes,
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	// A plain volume, or a sized one on a store without reflinks, may be
	// a clone still to be copied.
	if v.ClonePending, err = readClonePending(volFd); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errBroken, clonePending, err)
	}
	return v, nil
}

func scanNamespace(dirFd int, ns string, fn func(ns string, nsFd int, name string) error) error {
	nsFd, err := fsx.OpenDir(dirFd, ns)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	defer unix.Close(nsFd)
	names, err := fsx.ReadDirNames(nsFd)
	if err != nil {
		return fmt.Errorf("namespace %q: %w", ns, err)
	}
	sort.Strings(names)
	for _, name := range names {
		if ValidateName(name) != nil {
			continue
		}
		if err := fn(ns, nsFd, name); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) mountpoint(ns, name string) string {
	return filepath.Join(s.dir, ns, name, dataDir)
}

// readClonePending returns the source of the pending clone whose volume
// directory is open at volFd, or "" when it is none.
func readClonePending(volFd int) (string, error) {
	data, err := fsx.ReadFile(volFd, clonePending, 2*maxNameLen+2)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return string(data), err
}

// writeVolume writes the volume.json of a new volume into the directory open
// at volFd, durably if asked; the volume is not yet under its name. A spare
// holds an empty volume.json already.
func writeVolume(volFd int, v *Volume, durable, spare bool) error {
	data, err := volumeJSON(v)
	if err != nil {
		return err
	}
	if spare {
		return fillFileAt(volFd, metaFile, data, durable)
	}
	return createFileAt(volFd, metaFile, data, durable)
}

// volumeJSON is the content of v's volume.json.
func volumeJSON(v *Volume) ([]byte, error) {
	rec := record{
		Name:      v.Name,
		Namespace: v.Namespace,
		CreatedAt: v.CreatedAt,
		Labels:    v.Labels,
		Anonymous: v.Anonymous,
		Owner:     v.Owner,
		UID:       v.UID,
		GID:       v.GID,
		Mode:      v.Mode,
		Chowned:   v.Chowned,
		Limit:     v.Limit,
		Backend:   v.Backend,
		Inodes:    v.Inodes,
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// rewriteVolume replaces the volume.json of an existing volume, open at
// volFd, atomically and durably: a temporary file, fsynced, renamed over it,
// and the directory fsynced.
func rewriteVolume(volFd int, v *Volume) error {
	data, err := volumeJSON(v)
	if err != nil {
		return err
	}
	return replaceFileAt(volFd, metaFile, data, true)
}

// splitVolumePath takes apart path, which should be dir/NS/NAME/leaf with
// dir a form of ROOT/volumes. ok says it is, with a valid namespace and
// name; otherwise ns and name are what path has in their places, if
// anything, for messages.
func splitVolumePath(dir, path, leaf string) (ns, name string, ok bool) {
	rest, found := strings.CutPrefix(path, dir+"/")
	if !found {
		return "", "", false
	}
	parts := strings.SplitN(rest, "/", 4)
	ns = parts[0]
	if len(parts) > 1 {
		name = parts[1]
	}
	ok = len(parts) == 3 && parts[2] == leaf && ValidateNamespace(ns) == nil && ValidateName(name) == nil
	return ns, name, ok
}
