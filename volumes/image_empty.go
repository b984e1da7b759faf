package volumes

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/imageempty"
)

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
	return imageempty.Name(digestHex, target), nil
}

// maxImageEmptyDirBytes bounds the records: once the size the file system
// gives their directory passes it (on ext4 about 40,000 records; every
// file system's grows with its entries), no more are made, and later
// containers of images not recorded yet run the hook. A tenant who names
// ever new targets cannot fill the store's file system with records.
var maxImageEmptyDirBytes int64 = 4 << 20

// Record records that the image with config digest digestHex
// has nothing to copy at target, unless the records are full.
func (e EmptyTargets) Record(digestHex, target string) error {
	s := e.s
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
	if err := imageempty.Record(dirFd, name, maxImageEmptyDirBytes); err != nil {
		return fmt.Errorf("recording an image's empty target in %s: %w", imageEmptyDir, err)
	}
	return nil
}

// Has reports whether Record recorded
// (digestHex, target). It costs one fstatat.
func (e EmptyTargets) Has(digestHex, target string) (bool, error) {
	s := e.s
	name, err := imageEmptyName(digestHex, target)
	if err != nil {
		return false, err
	}
	if err := s.enterOpen("looking up an image's empty target"); err != nil {
		return false, err
	}
	defer s.leave()
	return imageempty.Has(s.dirFd, imageEmptyDir+"/"+name)
}

// RemoveAllBut removes the records of the images whose config
// digest (hex) keep does not accept, once those images are gone, and returns
// how many it removed. Entries that are no record are left alone.
func (e EmptyTargets) RemoveAllBut(keep func(digestHex string) bool) (int, error) {
	s := e.s
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
	return imageempty.RemoveAllBut(dirFd, keep)
}
