// Package volumes is the volume store of nri-volumes: it owns everything below
// ROOT/volumes, the data (NAMESPACE/NAME/_data) and metadata
// (NAMESPACE/NAME/volume.json) of named and anonymous volumes, the record of
// which containers use which volume (.refs, and .pods for the anonymous
// volumes of each pod; see index.go), copy-up into new volumes, the pins
// below ROOT/pins that runc mounts instead of a bind source or a subpath
// (see pins.go), and the kernel-enforced size of sized volumes (sized.go: an
// ext4 image on a loop device, or a btrfs subvolume with a qgroup limit).
//
// Concurrency: a Store is safe for use by many goroutines, and several
// processes (the plugin and the CLI) may open the same root at once. Every
// mutation holds the Store's in-process lock and an exclusive flock on
// ROOT/volumes/.lock, reads hold a shared one, and an in-use check and the
// removal it guards happen under the same lock. The operations on the path of
// an NRI request wait for these locks no longer than WithLockTimeout allows;
// long operations (Prune, RemoveOrphans) take the lock in short batches, and
// the data of removed volumes is deleted outside the lock (see trash.go).
// Copy-up holds a lock on the one volume it fills, so it never blocks the
// rest of the store. A volume appears under its name only once complete and
// durable, and reference lists are replaced atomically, so a process that
// dies at any moment leaves no half-written state; Open removes what such a
// process left behind.
package volumes

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/volumes/internal/copyuplog"
)

// CreateOptions are the properties of a new volume; they apply only when a
// call creates the volume.
type CreateOptions struct {
	// Labels label a named volume.
	Labels map[string]string
	// Size is the enforced size in bytes; 0: unbounded. See sized.go.
	Size int64
	// UID, GID and Mode, when set, are the owner and mode of the volume's
	// root, _data; otherwise it is root's, mode 0755.
	UID, GID *int
	Mode     *uint32
	// Inodes, with a Size on the image backend, is about the number of
	// inodes its file system holds; 0: mkfs.ext4's default. Such a volume
	// is formatted when it is made, never taken from the formatted ones
	// kept ready, so it is for volume create, not for NRI requests.
	Inodes int64
	// CloneOf makes the volume as a reflink clone of another volume of
	// its namespace, or of a snapshot of one; see createCloneLocked.
	CloneOf *CloneSource
}

// Request is one volume a container wants. An empty Name asks for the
// anonymous volume of Owner, named AnonymousName(*Owner). The CreateOptions
// apply only when the request creates the volume, and Labels only to a named
// one.
type Request struct {
	Namespace string
	Name      string
	Owner     *Owner
	CreateOptions
	// PersistLater makes a new named volume without the fsyncs that make it
	// durable: it comes back with PersistLater set, and the caller calls Persist
	// before a container uses it (the plugin has the copy-up hook do it).
	PersistLater bool
	// MustExist makes a missing named volume an error (ErrNotFound) instead
	// of a new one: an external volume, which only a person or a pull
	// makes.
	MustExist bool
}

// Store is the volume store below one root directory.
type Store struct {
	root string
	dir  string // ROOT/volumes with symlinks resolved, as mountinfo shows it
	pins Pins   // see pins.go
	// given is ROOT/volumes as the store was opened, symlinks unresolved.
	given string
	dev   uint64 // device of dir: removal never leaves it

	// sem is the in-process lock, a channel so that a wait can give up
	// (see enter); it guards the fields below.
	sem     chan struct{}
	rootFd  int // ROOT
	dirFd   int
	refsFd  int // ROOT/volumes/.refs
	podsFd  int // ROOT/volumes/.pods
	trashFd int // ROOT/volumes/.trash
	lock    *os.File
	closed  bool
	// fds guards the descriptors above against Close for the reads that
	// skip sem (see whileOpen); fdsClosed, under it, says Close took them.
	fds       sync.RWMutex
	fdsClosed bool
	// reapKick wakes the reaper, once Reaper has started one;
	// reapStop ends it.
	reapKick chan struct{}
	reapStop chan struct{}
	// gen is the generation of the store that idx reflects; every mutation
	// bumps the one in the lock file, so a change by another process shows.
	gen uint64
	// idx holds who uses which volume and the pods of anonymous volumes, so
	// Acquire, Release and RemovePodVolumes never scan the store. nil until
	// first needed.
	idx *index
	// counts are the volumes of each namespace, counted for the metrics;
	// nil until first asked for. See nscount.go.
	counts *nsCounts
	// lockTimeout bounds the lock waits of the operations of NRI requests;
	// see WithLockTimeout.
	lockTimeout atomic.Int64
	// policy says how sized volumes are made.
	policy SizePolicy
	// spare holds inodes made ahead for requests; see Spares.
	spare spares
	// formats holds the images formatted outside the lock, and
	// formatBudget bounds a request's wait for them; see format.go.
	formats      formatter
	formatBudget atomic.Int64
	// reflinks caches whether the store's file system can clone a file
	// in O(1); see canReflink.
	reflinks reflinkProbe
	// copyUps is the log of copy-ups for the metrics, with a lock and a
	// descriptor of its own; see CopyUpLog.
	copyUps *copyuplog.Log
	// repairs are what Open repaired, told to WithRepairs; set before Open
	// returns, then read-only.
	repairs []string
}

// Worker is a background worker of the store, for Start: Reaper, Spares,
// Thawer.
type Worker func(*Store)

// Start starts workers, in the order given, each running until Close. A
// long-running process (the plugin) starts them; a short-lived one (the
// CLI, the hook) has nothing to gain from them.
func (s *Store) Start(workers ...Worker) {
	for _, w := range workers {
		w(s)
	}
}

// Close releases the store's descriptors. The store must not be used after.
// It waits for the operation of this process that runs, never for the
// store's lock.
func (s *Store) Close() error {
	s.enter(context.Background())
	if s.closed {
		s.leave()
		return nil
	}
	s.closed = true
	if s.reapStop != nil {
		close(s.reapStop)
	}
	if s.spare.stop != nil {
		close(s.spare.stop)
		// The refiller may be making a spare, and takes the in-process
		// lock to add it: waited for after that lock is left.
		defer func(done <-chan struct{}) { <-done }(s.spare.done)
	}
	defer s.leave()
	s.closeFormats()
	err := s.lock.Close()
	if s.copyUps != nil {
		if cerr := s.copyUps.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}
	s.fds.Lock()
	defer s.fds.Unlock()
	s.fdsClosed = true
	for _, fd := range []int{s.refsFd, s.podsFd, s.trashFd, s.spare.fd, s.formats.fd, s.dirFd, s.rootFd} {
		if fd < 0 {
			continue
		}
		if cerr := unix.Close(fd); err == nil && cerr != nil {
			err = cerr
		}
	}
	return err
}

// withLock runs fn holding the in-process lock and a flock of kind how
// (LOCK_SH or LOCK_EX), waiting for them as long as it takes. It first
// (re)builds the index if this Store has none yet or another process changed
// the store since this one last looked.
func (s *Store) withLock(how int, fn func() error) error {
	return s.locked(context.Background(), "", how, true, fn)
}

// withRequestLock is withLock(LOCK_EX) for the operations of NRI requests:
// the wait is bounded by WithLockTimeout, and what says, for the error, what
// the operation was for.
func (s *Store) withRequestLock(what string, fn func() error) error {
	ctx, cancel := s.requestContext()
	defer cancel()
	return s.locked(ctx, what, unix.LOCK_EX, true, fn)
}

func (s *Store) locked(ctx context.Context, what string, how int, index bool, fn func() error) error {
	start := time.Now()
	if err := s.lockBoth(ctx, how); err != nil {
		if errors.Is(err, errSemTimeout) {
			return s.busyError(what, "another operation of this process on the volume store", start)
		}
		if ctx.Err() != nil {
			return s.busyError(what, fmt.Sprintf("the lock of the volume store (%s), which another process holds, such as a running \"nri-volumes volume prune\" or \"volume rm\"", s.lock.Name()), start)
		}
		return err
	}
	defer s.leave()
	fd := int(s.lock.Fd())
	observeLockWait(start)
	defer unix.Flock(fd, unix.LOCK_UN)
	if index {
		gen, err := s.readGen()
		if err != nil {
			return err
		}
		if s.idx == nil || gen != s.gen {
			if err := s.rebuildIndex(); err != nil {
				return err
			}
		}
	}
	return fn()
}

// bump records a mutation. When the index matches the disk (indexed), this
// Store keeps the new generation; otherwise it keeps the old one, so its next
// exclusive operation rebuilds the index from disk.
func (s *Store) bump(indexed bool) error {
	gen, err := s.readGen()
	if err != nil {
		return err
	}
	gen++
	if indexed {
		s.bumpCounts(gen-1, gen)
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], gen)
	if _, err := unix.Pwrite(int(s.lock.Fd()), b[:], 0); err != nil {
		return fmt.Errorf("write store generation: %w", err)
	}
	if indexed {
		s.gen = gen
	}
	return nil
}

// readVolume reads volume name of namespace ns, whose directory is open at
// nsFd. A missing volume gives an error matching fs.ErrNotExist, an unusable
// one an error matching errBroken.
func (s *Store) readVolume(nsFd int, ns, name string) (*Volume, error) {
	v, err := s.loadVolume(nsFd, ns, name)
	if err != nil {
		return nil, err
	}
	if s.idx != nil {
		v.UsedBy = s.idx.usedBy(v.key())
	}
	return v, nil
}

// CopyUpLog returns the store's log of copy-ups: the hook and the plugin
// record copy-ups there, and the plugin's metrics read it. It is closed with
// the store.
func (s *Store) CopyUpLog() CopyUpLog { return CopyUpLog{s.copyUps} }

// counted calls fn with the counts when they reflect the store as this
// Store last saw it; it runs under the lock of a mutation, which then
// bumps the generation (see bumpCounts).
func (s *Store) counted(fn func(c *nsCounts)) {
	if s.counts != nil && s.counts.gen == s.gen {
		fn(s.counts)
	}
}

// bumpCounts carries the counts from generation from to to, when they
// were valid at from: the mutation between updated them.
func (s *Store) bumpCounts(from, to uint64) {
	if s.counts != nil && s.counts.gen == from {
		s.counts.gen = to
	}
}

// reflinkProbe caches whether the store's file system has reflinks.
type reflinkProbe struct {
	once sync.Once
	ok   bool
}
