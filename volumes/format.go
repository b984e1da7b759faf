package volumes

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Formatting sized volumes outside the store's lock and outside the NRI
// request. mkfs.ext4 of a 1 TiB image takes a quarter of a second or more,
// and a pod may ask for dozens: made inside the request, under the
// store-wide lock, they outlived containerd's timeout, and the plugin was
// dropped while the lock kept every other request out.
//
// So an image volume is made in two steps. First, before the store's lock is
// taken, a formatter makes the volume's directory in ROOT/volumes/.formats
// (its _data, and disk.img formatted for the size) and, for a volume a
// container will use at once, attaches and mounts it. One image is formatted
// at a time, in goroutines of their own, so the work goes on after the
// request that asked for it has returned. Then, under the lock, the volume is
// made from such a ready entry by a rename, as a spare is taken (spares.go).
//
// A request waits for its images no longer than WithFormatBudget allows; past
// it, Acquire fails with a *FormattingError (ErrBusy) that says how far the
// formatting got, and a retry of the request (kubelet retries a failed
// CreateContainer) finds the images ready. Ready entries are not tied to a
// request, only to a size: whoever asks first takes one.
//
// Each entry's directory is held with a flock by the process that made it,
// until the entry becomes a volume or the Store closes: what Open finds
// there unlocked is a dead process's, unmounted and moved into the trash.
// The entries live in formatsDir.
//
// maxFormats bounds the entries ready or being formatted, so that requests
// cannot have the node format without end; maxNamespaceFormats bounds those
// a namespace's requests started, so that one namespace cannot fill the
// node's share and refuse every other's sized volumes.
//
// An entry is ready until a request takes it, and a request that fails
// after its images were formatted (beside an external volume that does not
// exist, or a pod deleted after a FormattingError) takes none: an entry
// nobody took within formatIdle is unmounted and removed, so that it holds
// a loop device and a mount, charged to no budget, for no longer. The idle
// time outlasts the kubelet's retries of a failed container creation.
const (
	maxFormats          = 512
	maxNamespaceFormats = 64
	formatIdle          = 10 * time.Minute
)

// formatKey says what an entry is for.
type formatKey struct {
	size int64
	// active: attached and mounted at _data, for a container; otherwise
	// for a volume that nobody uses yet (volume create).
	active bool
}

// formatEntry is an entry ready in the formats directory.
type formatEntry struct {
	name string
	fd   int // its directory, flocked
	// dir is the formats directory, a descriptor of the entry's own, which
	// a Close meanwhile cannot pull from under it.
	dir int
	// ns is the namespace whose request started it; since, when it was
	// ready.
	ns    string
	since time.Time
}

// formatter is a Store's pool of ready entries; its own mutex guards it, so
// that the goroutines that format never take the store's locks.
type formatter struct {
	mu      sync.Mutex
	fd      int // ROOT/volumes/.formats (a descriptor of its own); -1 until first used
	ready   map[formatKey][]formatEntry
	pending map[formatKey]int
	// owned counts, per namespace, the entries its requests started that
	// are ready or being formatted.
	owned map[string]int
	// changed is closed, and replaced, whenever an entry is ready or a
	// formatting failed, to wake the waiting requests.
	changed chan struct{}
	// lastErr is the last formatting failure, by key, until one succeeds.
	lastErr map[formatKey]error
	closed  bool
	// idle is how long a ready entry waits to be taken (formatIdle);
	// expiring counts the expired entries being dropped, which Close
	// waits for.
	idle     time.Duration
	expiring sync.WaitGroup
	// One image is formatted at a time, the node's cores serving
	// containers, and the smallest waiting goes first: a pod's small
	// volume does not wait behind another pod's dozens of large ones.
	busy    bool
	waiting []int64 // sizes of the formattings waiting for their turn
	turn    *sync.Cond
}

// FormattingError says that new sized volumes of a request were not ready
// within the format budget. It matches ErrBusy: the request can be retried,
// and the formatting goes on meanwhile.
type FormattingError struct {
	// Namespace and Name are the first volume of the request that is not
	// ready; Size is its size.
	Namespace, Name string
	Size            int64
	// Ready of Total new sized volumes of the request were ready.
	Ready, Total int
	// Budget is how long the request waited.
	Budget time.Duration
	// Err is why the formatting failed, if it did, rather than being slow.
	Err error
}

// Error says which volume was not ready and why, and that a retry helps.
func (e *FormattingError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("volume %q of namespace %q: formatting its %s image failed: %v", e.Name, e.Namespace, FormatBytes(e.Size), e.Err)
	}
	return fmt.Sprintf("%v: volume %q of namespace %q (%s) is still being formatted after %s; %d of the %d new sized volumes of the request are ready, "+
		"the formatting goes on outside the request, and a retry of the container's creation finds them ready",
		ErrBusy, e.Name, e.Namespace, FormatBytes(e.Size), e.Budget, e.Ready, e.Total)
}

// Unwrap makes a FormattingError match ErrBusy, or the failure's own error.
func (e *FormattingError) Unwrap() error {
	if e.Err != nil {
		return e.Err
	}
	return ErrBusy
}

// formatWant is a new sized volume a request waits for.
type formatWant struct {
	ns, name string
	key      formatKey
}

// prepareFormats has the images of the new sized volumes of wants formatted
// before the store's lock is taken, waiting no longer than the format
// budget; active says they are for a container. It checks the budgets
// first, so that a request they refuse formats nothing.
func (s *Store) prepareFormats(what string, wants []Request, active bool) error {
	if !slices.ContainsFunc(wants, func(r Request) bool { return r.Size > 0 || r.CloneOf != nil }) {
		return nil // the common case costs nothing
	}
	var need []formatWant
	err := s.withRequestLock(what, func() error {
		b, err := s.pickBackend()
		if err != nil || b != BackendImage {
			return nil // createLocked makes it, or says why not
		}
		sums := map[string]int64{}
		for _, r := range wants {
			if r.CloneOf != nil && r.Size == 0 && !s.existsLocked(r.Namespace, r.Name) {
				// A clone that copies is a new sized volume too.
				r.Size = s.cloneFormatSize(r.Namespace, *r.CloneOf)
			}
			if r.Size <= 0 || s.existsLocked(r.Namespace, r.Name) {
				continue
			}
			sums[r.Namespace] += r.Size
			if err := s.checkBudgetLocked(r.Namespace, sums[r.Namespace]); err != nil {
				return err
			}
			need = append(need, formatWant{ns: r.Namespace, name: r.Name, key: formatKey{size: r.Size, active: active}})
		}
		return nil
	})
	if err != nil || len(need) == 0 {
		return err
	}
	ctx := context.Background()
	if d := time.Duration(s.formatBudget.Load()); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return s.waitFormats(ctx, need)
}

// waitFormats starts the formatting that need lacks and waits until an
// entry is ready for each, or ctx is done.
func (s *Store) waitFormats(ctx context.Context, need []formatWant) error {
	f := &s.formats
	began := time.Now()
	f.mu.Lock()
	if err := s.openFormatsLocked(); err != nil {
		f.mu.Unlock()
		return err
	}
	// The wants past what is ready or under way are formatted, each
	// charged to its namespace: the whole request is refused, before
	// anything starts, when a namespace would pass its bound.
	have := map[formatKey]int{}
	var start []formatWant
	for _, w := range need {
		if have[w.key] < len(f.ready[w.key])+f.pending[w.key] {
			have[w.key]++
			continue
		}
		start = append(start, w)
	}
	more := map[string]int{}
	for _, w := range start {
		more[w.ns]++
		if f.owned[w.ns]+more[w.ns] > maxNamespaceFormats {
			f.mu.Unlock()
			return namespaceFormatsError(w)
		}
	}
	for _, w := range start {
		if f.total() >= maxFormats {
			break
		}
		f.startLocked(s, w)
	}
	for {
		i := f.firstMissing(need)
		if i < 0 {
			f.mu.Unlock()
			return nil
		}
		w := need[i]
		fe := &FormattingError{Namespace: w.ns, Name: w.name, Size: w.key.size, Ready: i, Total: len(need)}
		if err := f.lastErr[w.key]; err != nil && f.pending[w.key] == 0 {
			fe.Err = err
			f.mu.Unlock()
			return fe
		}
		if f.pending[w.key] == 0 {
			// Taken by another request meanwhile: one more.
			if f.total() >= maxFormats {
				fe.Err = fmt.Errorf("%w: %d images are being formatted or wait to be taken on the node", ErrBusy, maxFormats)
				f.mu.Unlock()
				return fe
			}
			if f.owned[w.ns] >= maxNamespaceFormats {
				f.mu.Unlock()
				return namespaceFormatsError(w)
			}
			f.startLocked(s, w)
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			fe.Budget = time.Since(began).Round(time.Millisecond)
			return fe
		}
		f.mu.Lock()
	}
}

// startLocked starts the formatting of an entry for w, charged to its
// namespace; f.mu is held.
func (f *formatter) startLocked(s *Store, w formatWant) {
	f.pending[w.key]++
	f.owned[w.ns]++
	go s.format(w.key, w.ns)
}

// disownLocked gives back an entry's charge to namespace ns; f.mu is held.
func (f *formatter) disownLocked(ns string) {
	if f.owned[ns]--; f.owned[ns] <= 0 {
		delete(f.owned, ns)
	}
}

// namespaceFormatsError refuses w: its namespace has as many images being
// formatted or waiting to be taken as it may.
func namespaceFormatsError(w formatWant) error {
	return fmt.Errorf("%w: volume %q: namespace %q may have at most %d images being formatted or waiting to be taken, and has them; "+
		"its requests take them, or they are removed after %s unused", ErrBusy, w.name, w.ns, maxNamespaceFormats, formatIdle)
}

// firstMissing hands the ready entries to need in order and returns the
// index of the first want left without one, or -1; f.mu is held.
func (f *formatter) firstMissing(need []formatWant) int {
	left := map[formatKey]int{}
	for k, list := range f.ready {
		left[k] = len(list)
	}
	for i, w := range need {
		if left[w.key] == 0 {
			return i
		}
		left[w.key]--
	}
	return -1
}

func (f *formatter) total() int {
	n := 0
	for _, e := range f.ready {
		n += len(e)
	}
	for _, p := range f.pending {
		n += p
	}
	return n
}

// openFormatsLocked opens the formats directory, once; f.mu is held.
func (s *Store) openFormatsLocked() error {
	f := &s.formats
	if f.closed {
		return fmt.Errorf("%w: the store is closed", ErrBusy)
	}
	if f.fd >= 0 {
		return nil
	}
	fd, err := ensureDirAt(s.dirFd, formatsDir)
	if err != nil {
		return fmt.Errorf("the directory of images being formatted: %w", err)
	}
	f.fd = fd
	return nil
}

// format makes one entry for k, charged to namespace ns, then wakes the
// waiting requests.
func (s *Store) format(k formatKey, ns string) {
	f := &s.formats
	f.mu.Lock()
	f.waiting = append(f.waiting, k.size)
	for f.busy || slices.Min(f.waiting) < k.size {
		f.turn.Wait()
	}
	f.waiting = slices.Delete(f.waiting, slices.Index(f.waiting, k.size), slices.Index(f.waiting, k.size)+1)
	f.busy = true
	f.mu.Unlock()
	e, err := s.formatEntry(k)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.busy = false
	f.turn.Broadcast()
	f.pending[k]--
	switch {
	case err != nil:
		f.lastErr[k] = err
		f.disownLocked(ns)
	case f.closed:
		s.dropFormatEntry(e)
	default:
		delete(f.lastErr, k)
		e.ns, e.since = ns, time.Now()
		f.ready[k] = append(f.ready[k], e)
		time.AfterFunc(f.idle, s.expireFormats)
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// formatEntry makes an entry: its directory, flocked, _data and the
// formatted disk.img, attached and mounted when k is active.
func (s *Store) formatEntry(k formatKey) (formatEntry, error) {
	f := &s.formats
	f.mu.Lock()
	dir, err := -1, fmt.Errorf("%w: the store is closed", ErrBusy)
	if !f.closed {
		dir, err = unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	f.mu.Unlock()
	if err != nil {
		return formatEntry{}, err
	}
	name := "f-" + strconv.FormatInt(k.size, 10) + "-" + randomSuffix()
	if err := unix.Mkdirat(dir, name, 0o700); err != nil {
		unix.Close(dir)
		return formatEntry{}, fmt.Errorf("mkdir %s: %w", name, err)
	}
	fd, err := fsx.OpenDir(dir, name)
	if err != nil {
		_ = removeAllAt(dir, name, s.dev)
		unix.Close(dir)
		return formatEntry{}, err
	}
	e := formatEntry{name: name, fd: fd, dir: dir}
	fail := func(err error) (formatEntry, error) {
		s.dropFormatEntry(e)
		return formatEntry{}, err
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return fail(err)
	}
	if err := (sizer.Image{}).Prepare(fd, k.size); err != nil {
		return fail(err)
	}
	if k.active {
		if err := (sizer.Image{}).Activate(fd, filepath.Join(s.dir, formatsDir, name)); err != nil {
			return fail(err)
		}
	}
	return e, nil
}

// dropFormatEntry takes an entry down, removes it and closes its
// descriptors; f.mu is held or the entry is no one else's.
func (s *Store) dropFormatEntry(e formatEntry) {
	_ = (sizer.Image{}).Deactivate(e.fd, filepath.Join(s.dir, formatsDir, e.name))
	unix.Close(e.fd)
	_ = removeAllAt(e.dir, e.name, s.dev)
	unix.Close(e.dir)
}

// takeFormatLocked moves a ready entry for k to tmp in the namespace open at
// nsFd, under the store's lock. It reports whether there was one.
func (s *Store) takeFormatLocked(k formatKey, nsFd int, tmp string) (bool, error) {
	f := &s.formats
	f.mu.Lock()
	defer f.mu.Unlock()
	list := f.ready[k]
	if len(list) == 0 {
		return false, nil
	}
	e := list[len(list)-1]
	f.ready[k] = list[:len(list)-1]
	f.disownLocked(e.ns)
	if err := renameNoReplace(e.dir, e.name, nsFd, tmp); err != nil {
		s.dropFormatEntry(e)
		return false, fmt.Errorf("take a formatted image: %w", err)
	}
	unix.Close(e.fd) // the flock goes with it: the entry is the volume's now
	unix.Close(e.dir)
	return true, nil
}

// expireFormats removes the ready entries that nobody took within the idle
// time. Each is unmounted and removed after f.mu is left, so that neither
// the formatter's requests nor the store's wait for it.
func (s *Store) expireFormats() {
	f := &s.formats
	f.mu.Lock()
	var old []formatEntry
	for k, list := range f.ready {
		keep := list[:0]
		for _, e := range list {
			if time.Since(e.since) < f.idle {
				keep = append(keep, e)
				continue
			}
			old = append(old, e)
			f.disownLocked(e.ns)
		}
		if len(keep) == 0 {
			delete(f.ready, k)
		} else {
			f.ready[k] = keep
		}
	}
	f.expiring.Add(len(old))
	f.mu.Unlock()
	for _, e := range old {
		s.dropFormatEntry(e) // no one else's: out of f.ready
		f.expiring.Done()
	}
}

// closeFormats drops the ready entries, and waits for the expired ones
// being dropped; formattings under way drop theirs when they end.
func (s *Store) closeFormats() {
	f := &s.formats
	f.mu.Lock()
	f.closed = true
	for _, list := range f.ready {
		for _, e := range list {
			s.dropFormatEntry(e)
		}
	}
	f.ready = map[formatKey][]formatEntry{}
	f.owned = map[string]int{}
	f.mu.Unlock()
	f.expiring.Wait()
}

// inFormats reports whether path is in the formats directory.
func (s *Store) inFormats(path string) bool {
	return strings.HasPrefix(path, filepath.Join(s.dir, formatsDir)+"/")
}

// deactivateTmp takes down the file system of a formatted entry that was
// taken to tmp, in the namespace open at nsFd, and failed to become a
// volume (or whose process died before it did), so that it can be removed;
// an entry whose _data is no mount is left as it is.
func (s *Store) deactivateTmp(nsFd int, tmp string) {
	fd, err := fsx.OpenDir(nsFd, tmp)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	_ = (sizer.Image{}).Deactivate(fd, "/proc/self/fd/"+strconv.Itoa(fd))
}
