package volumes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// imageEmptyDir holds one empty file per (image, target) that a copy-up hook
// found to have nothing to copy: "<config digest hex>-<32 hex of
// sha256(target)>". An image's content never changes for its config digest,
// so a later container of that image needs no hook to fill a volume there.
// The files are written without fsync: one lost in a crash costs a hook run.
// See imageEmptyDir.

// ParseImageDigest checks that digest is "sha256:" and 64 lowercase hex
// digits, an image config digest as containerd sends it, and returns the hex
// part.
func ParseImageDigest(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || !IsHex64(h) {
		return "", fmt.Errorf("image digest %q: %w: want sha256: and 64 lowercase hex digits", digest, ErrInvalid)
	}
	return h, nil
}

// IsHex64 says whether s is 64 lowercase hexadecimal digits: the hex of a
// sha256 digest, or an ID containerd generates.
func IsHex64(s string) bool {
	return len(s) == sha256.Size*2 && strings.Trim(s, "0123456789abcdef") == ""
}

// imageEmptyName is the entry of (digestHex, target) in imageEmptyDir.
func imageEmptyName(digestHex, target string) (string, error) {
	if !IsHex64(digestHex) {
		return "", fmt.Errorf("image digest %q: %w: want 64 lowercase hex digits", digestHex, ErrInvalid)
	}
	sum := sha256.Sum256([]byte(target))
	return digestHex + "-" + hex.EncodeToString(sum[:16]), nil
}

// maxImageEmptyDirBytes bounds the records: once the size the file system
// gives their directory passes it (on ext4 about 40,000 records; every
// file system's grows with its entries), no more are made, and later
// containers of images not recorded yet run the hook. A tenant who names
// ever new targets cannot fill the store's file system with records.
var maxImageEmptyDirBytes int64 = 4 << 20

// RecordImageTargetEmpty records that the image with config digest digestHex
// has nothing to copy at target, unless the records are full.
func (s *Store) RecordImageTargetEmpty(digestHex, target string) error {
	name, err := imageEmptyName(digestHex, target)
	if err != nil {
		return err
	}
	if err := s.enterOpen("recording an image's empty target"); err != nil {
		return err
	}
	dirFd, err := ensureDirAt(s.dirFd, imageEmptyDir)
	s.leave()
	if err != nil {
		return fmt.Errorf("recording an image's empty target: %w", err)
	}
	defer unix.Close(dirFd)
	st, err := fsx.Fstat(dirFd)
	if err != nil {
		return fmt.Errorf("recording an image's empty target: %w", err)
	}
	if st.Size > maxImageEmptyDirBytes {
		return fmt.Errorf("recording an image's empty target: the records are full (%s is %d bytes, more than %d); they shrink as images leave the node",
			imageEmptyDir, st.Size, maxImageEmptyDirBytes)
	}
	fd, err := unix.Openat(dirFd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("recording an image's empty target: %w", &os.PathError{Op: "openat", Path: name, Err: err})
	}
	return unix.Close(fd)
}

// ImageTargetEmpty reports whether RecordImageTargetEmpty recorded
// (digestHex, target). It costs one fstatat.
func (s *Store) ImageTargetEmpty(digestHex, target string) (bool, error) {
	name, err := imageEmptyName(digestHex, target)
	if err != nil {
		return false, err
	}
	if err := s.enterOpen("looking up an image's empty target"); err != nil {
		return false, err
	}
	defer s.leave()
	var st unix.Stat_t
	err = unix.Fstatat(s.dirFd, imageEmptyDir+"/"+name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "fstatat", Path: imageEmptyDir + "/" + name, Err: err}
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG, nil
}

// RemoveImageTargetsEmpty removes the records of the images whose config
// digest (hex) keep does not accept, once those images are gone, and returns
// how many it removed. Entries that are no record are left alone.
func (s *Store) RemoveImageTargetsEmpty(keep func(digestHex string) bool) (int, error) {
	if err := s.enterOpen("removing the empty targets of removed images"); err != nil {
		return 0, err
	}
	dirFd, err := fsx.OpenDir(s.dirFd, imageEmptyDir)
	s.leave()
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer unix.Close(dirFd)
	names, err := fsx.ReadDirNames(dirFd)
	if err != nil {
		return 0, err
	}
	kept := map[string]bool{}
	removed := 0
	var errs []error
	for _, n := range names {
		digestHex, rest, ok := strings.Cut(n, "-")
		if !ok || !IsHex64(digestHex) || len(rest) != 32 {
			continue
		}
		k, seen := kept[digestHex]
		if !seen {
			k = keep(digestHex)
			kept[digestHex] = k
		}
		if k {
			continue
		}
		if err := unix.Unlinkat(dirFd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, &os.PathError{Op: "unlinkat", Path: n, Err: err})
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}
