// Package copyuplog keeps the log of copy-ups, freezes and clones that the
// plugin's metrics read. The copy-up hook, and the CLI for snapshots and
// clones, run in processes of their own, so they tell the plugin what they
// did through a file: one JSON line per record, appended to File in a
// directory that the volume store opens and hands over. Once the file
// passes maxBytes the next writer moves it to OldFile, replacing the one
// before, so the two never hold more than about twice that. A Reader
// remembers the file's inode and how far it read, and finds the rest of a
// rotated file under the old name.
//
// Concurrency: a Log is safe for use by many goroutines. Writers, in any
// process, take turns by an flock on File, so two never rotate at once;
// the Log's own lock only keeps its directory descriptor open while one is
// in use. A Reader is not safe for concurrent use.
package copyuplog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// File is the log, and OldFile the log before its last rotation, in the
// directory the Log is opened on.
const (
	File    = ".copyup-stats"
	OldFile = ".copyup-stats.1"
)

const (
	maxBytes = 1 << 20
	maxLine  = 512 // well under PIPE_BUF; real lines are ~100 bytes
)

// Reasons a copy-up failed, for Record.Reason.
const (
	ReasonLimit     = "limit"      // limits.copyUpMaxSize or copyUpMaxFiles
	ReasonPodBudget = "pod-budget" // limits.copyUpMaxSizePerPod
	ReasonNoSpace   = "no-space"   // the volume's size or its file system
	ReasonOther     = "other"
)

// What a Record is about, for Record.Event, when not a copy-up of the hook.
// Snapshots and clones are mostly made by the CLI, so they reach the
// plugin's metrics through this log as copy-ups do.
const (
	// EventFreeze records one freeze of a volume's file system, for a
	// snapshot, a live clone or an export, with how long it lasted.
	EventFreeze = "freeze"
	// EventClone records one clone made, with how its data was copied.
	EventClone = "clone"
)

// Record is one line of the log: what one copy-up of the hook did, or a
// freeze or a clone (Event).
type Record struct {
	// Reason is empty when the copy-up succeeded, else why it failed: one
	// of ReasonLimit, ReasonPodBudget, ReasonNoSpace and ReasonOther.
	Reason string `json:"reason,omitempty"`
	// Bytes and Files are what it copied (until it failed, if it did).
	Bytes int64 `json:"bytes"`
	Files int64 `json:"files"`
	// Duration is how long it took.
	Duration time.Duration `json:"ns"`
	// Event is what the record is about: a copy-up of the hook when
	// empty, else EventFreeze or EventClone, which other processes (the
	// CLI) record in the same log.
	Event string `json:"event,omitempty"`
	// Copy is how a clone's data was copied: "reflink" or "copy".
	Copy string `json:"copy,omitempty"`
	// Frozen is how long a freeze blocked a volume's writers.
	Frozen time.Duration `json:"frozen,omitempty"`
}

// OK says whether the copy-up succeeded.
func (r Record) OK() bool { return r.Reason == "" }

// errClosed is what a Log, and its Readers, return once closed. The store
// that opened the Log closes it with itself, so the text speaks of it.
var errClosed = errors.New("volume store is closed")

// Log is the copy-up log in one directory.
type Log struct {
	// mu guards dirFd against Close: read-held while it is in use.
	mu     sync.RWMutex
	dirFd  int
	closed bool
}

// Open returns the Log in the directory open at dirFd, through a descriptor
// of its own, which Close closes.
func Open(dirFd int) (*Log, error) {
	fd, err := unix.FcntlInt(uintptr(dirFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the copy-up log: %w", err)
	}
	return &Log{dirFd: fd}, nil
}

// Close closes the Log's descriptor, waiting for the operations that use it;
// later ones fail.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return unix.Close(l.dirFd)
}

// withDir runs fn with the Log's directory, held open meanwhile.
func (l *Log) withDir(fn func(dirFd int) error) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return errClosed
	}
	return fn(l.dirFd)
}

// Record appends r to the log. It is quick and bounded; the hook ignores
// its error, so that metrics never fail a container's start.
func (l *Log) Record(r Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	if len(line) > maxLine {
		return fmt.Errorf("copy-up record of %d bytes is too long", len(line))
	}
	return l.withDir(func(dirFd int) error {
		fd, err := openForAppend(dirFd)
		if err != nil {
			return fmt.Errorf("recording a copy-up: %w", err)
		}
		defer unix.Close(fd)
		// One write of a short line with O_APPEND: readers see it whole or
		// not at all, and it never interleaves with another writer's.
		n, err := unix.Write(fd, line)
		if err == nil && n < len(line) {
			// Out of space part-way: end the torn line so that the next
			// one starts fresh; the reader skips the torn one.
			_, _ = unix.Write(fd, []byte{'\n'})
			err = io.ErrShortWrite
		}
		if err != nil {
			return fmt.Errorf("recording a copy-up: %w", &os.PathError{Op: "write", Path: File, Err: err})
		}
		return nil
	})
}

// openForAppend opens the log in the directory open at dirFd for
// appending, rotated if it is full, with an exclusive flock on it that its
// close drops: writers take turns, so two never rotate at once.
func openForAppend(dirFd int) (int, error) {
	for range 8 {
		fd, err := unix.Openat(dirFd, File, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return -1, &os.PathError{Op: "openat", Path: File, Err: err}
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
		named, err := fsx.Lstat(dirFd, File)
		if err != nil || named.Ino != held.Ino || named.Dev != held.Dev {
			unix.Close(fd)
			continue
		}
		if held.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Close(fd)
			return -1, fmt.Errorf("%s is not a regular file", File)
		}
		if held.Size < maxBytes {
			return fd, nil
		}
		err = unix.Renameat(dirFd, File, dirFd, OldFile)
		unix.Close(fd)
		if err != nil {
			return -1, &os.PathError{Op: "renameat", Path: File, Err: err}
		}
	}
	return -1, errors.New("the copy-up log kept changing under the lock")
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

// Reader reads the records written since it last read. It is not safe for
// concurrent use.
type Reader struct {
	l   *Log
	ino uint64 // the file read so far; 0: none
	off int64  // the end of the last whole line read
	buf []byte
}

// NewReader returns a reader of the records written from now on.
func (l *Log) NewReader() (*Reader, error) {
	r := &Reader{l: l}
	err := l.withDir(func(dirFd int) error {
		// Made here if missing, so that the reader knows the file that
		// the first records go to, even if it is rotated before Read.
		fd, err := unix.Openat(dirFd, File, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return &os.PathError{Op: "openat", Path: File, Err: err}
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

// Read calls fn for each record written since the last Read, in order. A
// line that is still being written is left for the next Read; one that is
// not a record (torn by a full disk) is skipped.
func (r *Reader) Read(fn func(Record)) error {
	err := r.l.withDir(func(dirFd int) error {
		fd, err := unix.Openat(dirFd, File, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			fd = -1
		} else if err != nil {
			return &os.PathError{Op: "openat", Path: File, Err: err}
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
				return fmt.Errorf("%s is not a regular file", File)
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

func (r *Reader) finishOld(dirFd int, fn func(Record)) error {
	fd, err := unix.Openat(dirFd, OldFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
		return nil // rotated twice since: those lines are gone
	}
	if err != nil {
		return &os.PathError{Op: "openat", Path: OldFile, Err: err}
	}
	defer unix.Close(fd)
	st, err := fsx.Fstat(fd)
	if err != nil || st.Ino != r.ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return err
	}
	return r.readFrom(fd, fn)
}

// readFrom reads the whole lines of fd from r.off on, at most 2*maxBytes
// bytes, and moves r.off past them.
func (r *Reader) readFrom(fd int, fn func(Record)) error {
	st, err := fsx.Fstat(fd)
	if err != nil {
		return err
	}
	if st.Size < r.off {
		r.off = 0 // truncated: not by us, but start over
	}
	want := min(st.Size-r.off, 2*maxBytes)
	if want <= 0 {
		return nil
	}
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	buf := r.buf[:want]
	n, err := readFullAt(fd, buf, r.off)
	if err != nil {
		return &os.PathError{Op: "pread", Path: File, Err: err}
	}
	buf = buf[:n]
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) > maxLine {
				// Not a record's beginning: no writer makes lines this
				// long. Skip it rather than wait for a newline forever.
				r.off += int64(len(buf))
			}
			return nil
		}
		var rec Record
		line := buf[:i]
		// Past the line before it is counted, so a panic or an error of
		// the caller never makes the next read count it again.
		r.off += int64(i + 1)
		buf = buf[i+1:]
		// The file is the store's, but a record with values no writer
		// makes is skipped rather than trusted.
		if json.Unmarshal(line, &rec) == nil && rec.Bytes >= 0 && rec.Files >= 0 && rec.Duration >= 0 {
			fn(rec)
		}
	}
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
