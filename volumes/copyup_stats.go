package volumes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// The copy-up hook runs in a process of its own, so it tells the plugin's
// metrics what it did through a file: one JSON line per copy-up, appended
// to ROOT/volumes/.copyup-stats. Once the file passes copyUpStatsMax bytes
// the next writer moves it to .copyup-stats.1, replacing the one before, so
// the two never hold more than about twice that. A reader remembers the
// file's inode and how far it read, and finds the rest of a rotated file
// under the old name.
const (
	copyUpStatsMax     = 1 << 20
	maxCopyUpStatsLine = 512 // well under PIPE_BUF; real lines are ~100 bytes
)

// Reasons a copy-up failed, for CopyUpResult.Reason.
const (
	CopyUpLimit     = "limit"      // limits.copyUpMaxSize or copyUpMaxFiles
	CopyUpPodBudget = "pod-budget" // limits.copyUpMaxSizePerPod
	CopyUpNoSpace   = "no-space"   // the volume's size or its file system
	CopyUpOther     = "other"
)

// CopyUpResult is what one copy-up of the hook did.
type CopyUpResult struct {
	// Reason is empty when the copy-up succeeded, else why it failed: one
	// of CopyUpLimit, CopyUpPodBudget, CopyUpNoSpace and CopyUpOther.
	Reason string `json:"reason,omitempty"`
	// Bytes and Files are what it copied (until it failed, if it did).
	Bytes int64 `json:"bytes"`
	Files int64 `json:"files"`
	// Duration is how long it took.
	Duration time.Duration `json:"ns"`
	// Event is what the record is about: a copy-up of the hook when
	// empty, else EventFreeze or EventClone (see snapshot_stats.go), which
	// other processes (the CLI) record in the same log.
	Event string `json:"event,omitempty"`
	// Copy is how a clone's data was copied: "reflink" or "copy".
	Copy string `json:"copy,omitempty"`
	// Frozen is how long a freeze blocked a volume's writers.
	Frozen time.Duration `json:"frozen,omitempty"`
}

// OK says whether the copy-up succeeded.
func (r CopyUpResult) OK() bool { return r.Reason == "" }

// RecordCopyUp appends r to the store's copy-up log for the plugin's
// metrics. It is quick and bounded; the hook ignores its error, so that
// metrics never fail a container's start.
func (s *Store) RecordCopyUp(r CopyUpResult) error {
	if err := s.enterOpen("recording a copy-up"); err != nil {
		return err
	}
	defer s.leave()
	return s.recordLocked(r)
}

// recordLocked is RecordCopyUp for a caller inside the store already.
func (s *Store) recordLocked(r CopyUpResult) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	if len(line) > maxCopyUpStatsLine {
		return fmt.Errorf("copy-up record of %d bytes is too long", len(line))
	}
	fd, err := s.openCopyUpStatsLocked()
	if err != nil {
		return fmt.Errorf("recording a copy-up: %w", err)
	}
	defer unix.Close(fd)
	// One write of a short line with O_APPEND: readers see it whole or not
	// at all, and it never interleaves with another writer's.
	n, err := unix.Write(fd, line)
	if err == nil && n < len(line) {
		// Out of space part-way: end the torn line so that the next one
		// starts fresh; the reader skips the torn one.
		_, _ = unix.Write(fd, []byte{'\n'})
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("recording a copy-up: %w", &os.PathError{Op: "write", Path: copyUpStatsFile, Err: err})
	}
	return nil
}

// openCopyUpStatsLocked opens the copy-up log for appending, rotated if it
// is full, with an exclusive flock on it that its close drops: writers
// take turns, so two never rotate at once.
func (s *Store) openCopyUpStatsLocked() (int, error) {
	for range 8 {
		fd, err := unix.Openat(s.dirFd, copyUpStatsFile, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return -1, &os.PathError{Op: "openat", Path: copyUpStatsFile, Err: err}
		}
		if err := flockBriefly(fd); err != nil {
			unix.Close(fd)
			return -1, err
		}
		held, err := fsx.Fstat(fd)
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		// Another writer may have rotated the file between the open and
		// the lock: then write to the new one.
		named, err := fsx.Lstat(s.dirFd, copyUpStatsFile)
		if err != nil || named.Ino != held.Ino || named.Dev != held.Dev {
			unix.Close(fd)
			continue
		}
		if held.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Close(fd)
			return -1, fmt.Errorf("%s is not a regular file", copyUpStatsFile)
		}
		if held.Size < copyUpStatsMax {
			return fd, nil
		}
		err = unix.Renameat(s.dirFd, copyUpStatsFile, s.dirFd, copyUpStatsOld)
		unix.Close(fd)
		if err != nil {
			return -1, &os.PathError{Op: "renameat", Path: copyUpStatsFile, Err: err}
		}
	}
	return -1, errors.New("the copy-up log kept changing under the lock")
}

// CopyUpReader reads the copy-ups that the hook recorded since it last read.
// It is not safe for concurrent use.
type CopyUpReader struct {
	s   *Store
	ino uint64 // the file read so far; 0: none
	off int64  // the end of the last whole line read
	buf []byte
}

// NewCopyUpReader returns a reader of the copy-ups recorded from now on.
func (s *Store) NewCopyUpReader() (*CopyUpReader, error) {
	r := &CopyUpReader{s: s}
	err := r.withDir(func(dirFd int) error {
		// Made here if missing, so that the reader knows the file that
		// the first copy-ups go to, even if it is rotated before Read.
		fd, err := unix.Openat(dirFd, copyUpStatsFile, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return &os.PathError{Op: "openat", Path: copyUpStatsFile, Err: err}
		}
		defer unix.Close(fd)
		st, err := fsx.Fstat(fd)
		if err != nil {
			return err
		}
		r.ino, r.off = st.Ino, st.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the copy-up log: %w", err)
	}
	return r, nil
}

// Read calls fn for each copy-up recorded since the last Read, in order. A
// line that is still being written is left for the next Read; one that is
// not a record (torn by a full disk) is skipped.
func (r *CopyUpReader) Read(fn func(CopyUpResult)) error {
	err := r.withDir(func(dirFd int) error {
		fd, err := unix.Openat(dirFd, copyUpStatsFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			fd = -1
		} else if err != nil {
			return &os.PathError{Op: "openat", Path: copyUpStatsFile, Err: err}
		} else {
			defer unix.Close(fd)
		}
		var ino uint64
		if fd >= 0 {
			st, err := fsx.Fstat(fd)
			if err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				return fmt.Errorf("%s is not a regular file", copyUpStatsFile)
			}
			ino = st.Ino
		}
		if ino != r.ino {
			// Rotated since the last read: finish the old file first.
			if r.ino != 0 {
				if err := r.finishOld(dirFd, fn); err != nil {
					return err
				}
			}
			r.ino, r.off = ino, 0
		}
		if fd < 0 {
			return nil
		}
		return r.readFrom(fd, fn)
	})
	if err != nil {
		return fmt.Errorf("reading the copy-up log: %w", err)
	}
	return nil
}

func (r *CopyUpReader) finishOld(dirFd int, fn func(CopyUpResult)) error {
	fd, err := unix.Openat(dirFd, copyUpStatsOld, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
		return nil // rotated twice since: those lines are gone
	}
	if err != nil {
		return &os.PathError{Op: "openat", Path: copyUpStatsOld, Err: err}
	}
	defer unix.Close(fd)
	st, err := fsx.Fstat(fd)
	if err != nil || st.Ino != r.ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return err
	}
	return r.readFrom(fd, fn)
}

// readFrom reads the whole lines of fd from r.off on, at most
// 2*copyUpStatsMax bytes, and moves r.off past them.
func (r *CopyUpReader) readFrom(fd int, fn func(CopyUpResult)) error {
	st, err := fsx.Fstat(fd)
	if err != nil {
		return err
	}
	if st.Size < r.off {
		r.off = 0 // truncated: not by us, but start over
	}
	want := min(st.Size-r.off, 2*copyUpStatsMax)
	if want <= 0 {
		return nil
	}
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	buf := r.buf[:want]
	n, err := readFullAt(fd, buf, r.off)
	if err != nil {
		return &os.PathError{Op: "pread", Path: copyUpStatsFile, Err: err}
	}
	buf = buf[:n]
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) > maxCopyUpStatsLine {
				// Not a record's beginning: no writer makes lines this
				// long. Skip it rather than wait for a newline forever.
				r.off += int64(len(buf))
			}
			return nil
		}
		var res CopyUpResult
		line := buf[:i]
		// Past the line before it is counted, so a panic or an error of
		// the caller never makes the next read count it again.
		r.off += int64(i + 1)
		buf = buf[i+1:]
		// The file is the store's, but a record with values no writer
		// makes is skipped rather than trusted.
		if json.Unmarshal(line, &res) == nil && res.Bytes >= 0 && res.Files >= 0 && res.Duration >= 0 {
			fn(res)
		}
	}
}

func (r *CopyUpReader) withDir(fn func(dirFd int) error) error {
	if err := r.s.enterOpen("reading the copy-up log"); err != nil {
		return err
	}
	defer r.s.leave()
	return fn(r.s.dirFd)
}

func readFullAt(fd int, buf []byte, off int64) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(fd, buf[n:], off+int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// flockBriefly takes fd's exclusive flock, giving up after about a second:
// the hook records on the path of a container's start, and a writer stopped
// while it holds the log's lock must not hold every later start up. A
// record not written is a count missing from the metrics, nothing more.
func flockBriefly(fd int) error {
	for try := 0; ; try++ {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil || !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		if try == 50 {
			return fmt.Errorf("the copy-up log is locked by another writer: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
