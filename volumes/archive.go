package volumes

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/archive"
)

// ArchiveLimits bound what Import takes from a tar; zero means no limit.
type ArchiveLimits = archive.Limits

// ArchiveStats count what Export wrote or Import read.
type ArchiveStats struct {
	Entries int64
	Bytes   int64
	// Skipped counts what Export left out: sockets, FIFOs and device
	// nodes, which Import refuses, and mounts inside the volume.
	Skipped int64
	// Snapshot says Export read a temporary snapshot of the volume, taken
	// because containers use it: the tar is the volume at one instant.
	Snapshot bool
}

// archiveStats are the counts of the archive package and whether Export
// read a snapshot, which only the store knows.
func archiveStats(st archive.Stats, snap bool) ArchiveStats {
	return ArchiveStats{Entries: st.Entries, Bytes: st.Bytes, Skipped: st.Skipped, Snapshot: snap}
}

// Export writes the data of volume name in namespace ns to w as a tar: owners,
// modes, nanosecond times, extended attributes, hard links as links and
// symlinks as links. It reads through descriptors beneath _data and never
// follows a symlink, so a container that uses the volume meanwhile cannot make
// it read outside. A sized volume that containers use is read from a
// temporary snapshot (see snapshot_export.go), so the tar is the volume at
// one instant; in a plain one, a file that changes while it is read is
// archived as far as its size said when its header was written.
func (s *Store) Export(ns, name string, w io.Writer) (ArchiveStats, error) {
	dataFd, release, snap, err := s.exportSource(ns, name)
	if err != nil {
		return ArchiveStats{}, err
	}
	defer release()
	root, err := fsx.Fstat(dataFd)
	if err != nil {
		return archiveStats(archive.Stats{}, snap), volumeError(ns, name, err)
	}
	st, err := archive.Write(dataFd, &root, w)
	if err != nil {
		return archiveStats(st, snap), opError("export", ns, name, err)
	}
	return archiveStats(st, snap), nil
}

// Import fills the data of volume name in namespace ns, which must be empty,
// from the tar r. A volume that a container uses is refused with ErrInUse
// naming the containers, as Remove does, and from that check to its end the
// import holds containers out: Acquire refuses the volume (see
// importRunning), so no container sees half an import or writes into a
// volume that a failed import empties again. The tar is untrusted: an entry
// with "..", an absolute name, one beneath a symlink, a hard link to anything
// but a regular file already in the archive, a device node or FIFO, a
// duplicate, an extended attribute larger than the kernel takes, or one
// beyond limits is refused with ErrArchive and a message that names it. Every
// write goes through descriptors beneath _data that refuse symlinks, so
// nothing outside the volume is touched; on any failure _data is emptied
// again and its owner, mode and times restored, and a volume that was cut
// short when the import began (Seeds.Create makes it so) stays cut short,
// held out of containers until an import ends well. Runs of zeros in a file, the
// holes of a sparse entry among them, are written as holes.
func (s *Store) Import(ns, name string, r io.Reader, limits ArchiveLimits) (stats ArchiveStats, err error) {
	volFd, dataFd, release, err := s.openArchiveData(ns, name, unix.LOCK_EX)
	if err != nil {
		return stats, err
	}
	defer release()
	var hold *importHold
	if err := s.withLock(unix.LOCK_SH, func() error {
		if users := s.idx.usedBy(volumeKey(ns, name)); len(users) > 0 {
			return &OpError{Namespace: ns, Name: name, Refs: users, Err: ErrInUse}
		}
		var err error
		if hold, err = holdImport(volFd); err != nil {
			return volumeError(ns, name, err)
		}
		return nil
	}); err != nil {
		return stats, err
	}
	emptied := true // whether _data is as the import found it, or empty
	defer func() {
		if !emptied {
			unix.Close(hold.fd) // the marker stays, unlocked: cut short
			return
		}
		if err != nil && hold.cutShort {
			// It was cut short (a seeding pull's volume is made so) and
			// stays so, empty: its owner may not get to remove it (a
			// CLI export holds it, the process dies), and an empty
			// volume without the marker would be taken for complete.
			unix.Close(hold.fd)
			return
		}
		if rerr := s.withLock(unix.LOCK_SH, hold.release); rerr != nil {
			err = errors.Join(err, volumeError(ns, name, rerr))
		}
	}()
	root, err := fsx.Fstat(dataFd)
	if err != nil {
		return stats, volumeError(ns, name, err)
	}
	if hold.cutShort {
		// What an import killed part-way left, which no container saw.
		if err := removeContentsAt(dataFd, root.Dev); err != nil {
			emptied = false
			return stats, opError("import", ns, name, fmt.Errorf("emptying what an import cut short left: %w", err))
		}
	}
	empty, err := fsx.IsEmptyDir(dataFd)
	if err != nil {
		return stats, volumeError(ns, name, err)
	}
	if !empty {
		return stats, volumeError(ns, name, fmt.Errorf("%w: import needs an empty volume", ErrInUse))
	}
	st, err := archive.Read(dataFd, r, limits)
	stats = archiveStats(st, false)
	if err != nil {
		cause := opError("import", ns, name, err)
		if cerr := removeContentsAt(dataFd, root.Dev); cerr != nil {
			emptied = false
			return stats, errors.Join(cause, opError("import", ns, name, fmt.Errorf("emptying after the failure: %w", cerr)))
		}
		// Best effort: the volume is empty again, which is what counts.
		_ = fsx.SetOwnerModeTimes(dataFd, &root)
		return stats, cause
	}
	return stats, nil
}

// openArchiveData opens the directory and the _data of a volume for export
// or import: a sized volume's own file system brought up for it (see
// activeData), the volume's flock taken as how says. release closes it all,
// in that order.
func (s *Store) openArchiveData(ns, name string, how int) (volFd, dataFd int, release func(), err error) {
	done, err := s.activeData(ns, name)
	if err != nil {
		return -1, -1, nil, err
	}
	volFd, dataFd, err = s.openData(ns, name, how)
	if err != nil {
		done()
		return -1, -1, nil, err
	}
	return volFd, dataFd, func() {
		unix.Close(dataFd)
		unix.Close(volFd)
		done()
	}, nil
}
