// Package imageempty keeps the records of the image targets where a copy-up
// found nothing to copy, in a directory that the volume store opens and
// hands over: one empty file per (image, target), named by the image's
// config digest and a hash of the target. An image's content never changes
// for its config digest, so a later container of that image needs no
// copy-up hook for a volume there. The files are written without fsync: one
// lost in a crash costs a hook run.
package imageempty

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

// ErrFull is wrapped by the error of Record once the records' directory
// has grown past its bound.
var ErrFull = errors.New("the records are full")

// Name is the record of (digestHex, target): "<digestHex>-<32 hex of
// sha256(target)>". digestHex is 64 lowercase hex digits, which the caller
// checks.
func Name(digestHex, target string) string {
	sum := sha256.Sum256([]byte(target))
	return digestHex + "-" + hex.EncodeToString(sum[:16])
}

// Record makes the record name in the directory open at dirFd, unless the
// size the file system gives the directory passes maxDirBytes: then it
// makes none and returns an error wrapping ErrFull. A record that exists is
// no error.
func Record(dirFd int, name string, maxDirBytes int64) error {
	st, err := fsx.Fstat(dirFd)
	if err != nil {
		return err
	}
	if st.Size > maxDirBytes {
		return fmt.Errorf("%w (%d bytes, more than %d); they shrink as images leave the node", ErrFull, st.Size, maxDirBytes)
	}
	fd, err := unix.Openat(dirFd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	return unix.Close(fd)
}

// RemoveAllBut removes, from the directory open at dirFd, the records of the
// images whose config digest (hex) keep does not accept, asking keep once
// per image, and returns how many it removed. Entries that are no record
// are left alone.
func RemoveAllBut(dirFd int, keep func(digestHex string) bool) (int, error) {
	names, err := fsx.ReadDirNames(dirFd)
	if err != nil {
		return 0, err
	}
	kept := map[string]bool{}
	removed := 0
	var errs []error
	for _, n := range names {
		digestHex, rest, ok := strings.Cut(n, "-")
		if !ok || len(digestHex) != 64 || strings.Trim(digestHex, "0123456789abcdef") != "" || len(rest) != 32 {
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

// Has reports whether the record at path, relative to the directory open at
// atFd, exists. It costs one fstatat, and so opens no directory: the plugin
// asks it inside CreateContainer.
func Has(atFd int, path string) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(atFd, path, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "fstatat", Path: path, Err: err}
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG, nil
}
