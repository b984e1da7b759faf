// Package archive writes the data of a volume as a tar and reads an
// untrusted tar back into an empty directory. Both work only through
// descriptors beneath a directory the caller hands in open, and never
// follow a symlink, so that a container using the volume meanwhile, or a
// hostile archive, cannot make them touch anything outside it. Which volume
// that directory is, bringing its file system up, locking it, holding
// containers out while a tar is read, and emptying the directory again
// after a failed Read are the store's; this package keeps no state and
// takes no lock.
package archive

import "errors"

// ErrRefused marks a tar that Read refuses: a hostile or unsupported entry,
// or one beyond the limits. The message names the entry.
var ErrRefused = errors.New("refused archive")

// Limits bound what Read takes from a tar; zero means no limit.
type Limits struct {
	// MaxFiles caps the entries of the archive.
	MaxFiles int64
	// MaxBytes caps the sum of the sizes of its regular files, as a reader
	// of them counts, holes included, and of its PAX records, extended
	// attributes included.
	MaxBytes int64
}

// Stats count what Write wrote or Read read.
type Stats struct {
	Entries int64
	Bytes   int64
	// Skipped counts what Write left out: sockets, FIFOs and device
	// nodes, which Read refuses, and mounts inside the directory.
	Skipped int64
}

// xattrPrefix is how PAX records carry extended attributes (GNU tar and
// bsdtar write and read the same).
const xattrPrefix = "SCHILY.xattr."

// xattrValueMax is the largest extended attribute value Linux takes
// (XATTR_SIZE_MAX): Read refuses a larger one at its entry instead of
// failing to set it later. archive/tar itself refuses a PAX header, all its
// records together, over 1 MiB, which bounds what one header holds.
const xattrValueMax = 64 << 10

// inode names a file by device and inode number, for hard links.
type inode struct{ dev, ino uint64 }
