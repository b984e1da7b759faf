package volumes

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// References are derivable state: the runtime knows which containers exist
// and what they mount, and the plugin's Synchronize rebuilds every reference
// from it (Reconcile). So they are kept out of volume.json, which holds a
// volume's identity only, and off the fsync path: ROOT/volumes/.refs/ID lists
// the keys ("NS/NAME") of the volumes container ID uses, one a line, and
// ROOT/volumes/.pods/ID the keys of pod sandbox ID's anonymous volumes.
//
// Both are replaced with a temporary file and a rename, so a process that
// dies at any moment leaves the old list or the new one, never a mix. They
// are never fsynced: after a crash of the node, whatever a list lost is
// rebuilt by the Reconcile of the plugin's first Synchronize. A list that
// cannot be read (torn by such a crash, a symlink, not a regular file) counts
// as absent, and Reconcile removes it. They live in refsDir and podsDir.
const (
	// maxListSize bounds what the store reads of one list: 1 MiB is several
	// thousand keys, far more than a container mounts.
	maxListSize = 1 << 20
)

// index is the in-memory view of .refs and .pods. The Store keeps it as long
// as the generation in the lock file says nobody changed the store since.
type index struct {
	ctrs  map[string]map[string]struct{} // container ID -> volume keys
	users map[string]map[string]struct{} // volume key -> container IDs
	pods  map[string]map[string]struct{} // pod sandbox ID -> anonymous volume keys
	owner map[string]string              // anonymous volume key -> pod sandbox ID
	sizes *ledger                        // sums of sizes per namespace; see ledger.go
}

func newIndex() *index {
	return &index{
		ctrs:  make(map[string]map[string]struct{}),
		users: make(map[string]map[string]struct{}),
		pods:  make(map[string]map[string]struct{}),
		owner: make(map[string]string),
		sizes: newLedger(),
	}
}

// setRefs makes keys the volumes container id uses; none drops the container.
func (x *index) setRefs(id string, keys map[string]struct{}) {
	for k := range x.ctrs[id] {
		removeFromSet(x.users, k, id)
	}
	delete(x.ctrs, id)
	if len(keys) == 0 {
		return
	}
	x.ctrs[id] = keys
	for k := range keys {
		addToSet(x.users, k, id)
	}
}

// usedBy returns the containers that use volume key, sorted, never nil.
func (x *index) usedBy(key string) []string {
	return sortedSet(x.users[key])
}

func (x *index) addAnon(pod, key string) {
	if old, ok := x.owner[key]; ok && old != pod {
		removeFromSet(x.pods, old, key)
	}
	x.owner[key] = pod
	addToSet(x.pods, pod, key)
}

func (x *index) dropAnon(key string) {
	if pod, ok := x.owner[key]; ok {
		removeFromSet(x.pods, pod, key)
		delete(x.owner, key)
	}
}

func addToSet(m map[string]map[string]struct{}, k, v string) {
	set := m[k]
	if set == nil {
		set = make(map[string]struct{})
		m[k] = set
	}
	set[v] = struct{}{}
}

func removeFromSet(m map[string]map[string]struct{}, k, v string) {
	set := m[k]
	delete(set, v)
	if len(set) == 0 {
		delete(m, k)
	}
}

func sortedSet(set map[string]struct{}) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func setOf(keys []string) map[string]struct{} {
	set := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		set[k] = struct{}{}
	}
	return set
}

// rebuildIndex reads .refs, .pods and the ledger of sizes: one directory
// read and one small file per live container and per pod with anonymous
// volumes, whatever the number of volumes.
func (s *Store) rebuildIndex() error {
	gen, err := s.readGen()
	if err != nil {
		return err
	}
	x := newIndex()
	lists, err := readLists(s.refsFd)
	if err != nil {
		return fmt.Errorf("read volume references: %w", err)
	}
	for id, keys := range lists {
		x.setRefs(id, setOf(keys))
	}
	lists, err = readLists(s.podsFd)
	if err != nil {
		return fmt.Errorf("read anonymous volumes of pods: %w", err)
	}
	for pod, keys := range lists {
		for _, k := range keys {
			x.addAnon(pod, k)
		}
	}
	if x.sizes, err = s.loadLedger(); err != nil {
		return err
	}
	s.idx, s.gen = x, gen
	return nil
}

// readLists reads every list in the directory open at dir, skipping what is
// not a list: temporary files, invalid names, unreadable lists.
func readLists(dir int) (map[string][]string, error) {
	names, err := fsx.ReadDirNames(dir)
	if err != nil {
		return nil, err
	}
	lists := make(map[string][]string, len(names))
	for _, n := range names {
		if validateID("", n) != nil {
			continue
		}
		if keys, err := readList(dir, n); err == nil {
			lists[n] = keys
		}
	}
	return lists, nil
}

// readList reads the list name in the directory open at dir without
// following a symlink. Every line must be a valid key and the last must end
// with a newline; anything else gives an error wrapping errBadList.
func readList(dir int, name string) ([]string, error) {
	data, err := fsx.ReadFile(dir, name, maxListSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadList, err)
	}
	if len(data) == 0 {
		return nil, nil
	}
	if data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: %s: no final newline", errBadList, name)
	}
	lines := bytes.Split(data[:len(data)-1], []byte{'\n'})
	keys := make([]string, 0, len(lines))
	for _, l := range lines {
		k := string(l)
		if !validKey(k) {
			return nil, fmt.Errorf("%w: %s: bad volume key %q", errBadList, name, k)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func validKey(k string) bool {
	ns, name, ok := strings.Cut(k, "/")
	return ok && ValidateNamespace(ns) == nil && ValidateName(name) == nil
}

// writeList makes the list name in the directory open at dir hold keys, or
// removes it when keys is empty. See the top of this file for why it does
// not fsync.
func writeList(dir int, name string, keys []string) error {
	if len(keys) == 0 {
		if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "unlinkat", Path: name, Err: err}
		}
		return nil
	}
	return replaceFileAt(dir, name, listContent(keys), false)
}

// listContent is what a list of keys holds: one per line, sorted.
func listContent(keys []string) []byte {
	keys = slices.Clone(keys)
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// syncLists makes the directory open at dir hold exactly the lists of want,
// writing only those that differ and removing everything else: lists of
// other IDs, temporary files, symlinks (unlinked, never followed). have is
// what the index says the lists hold; a list it shows equal to want is not
// read again.
func syncLists(dir int, dev uint64, want map[string][]string, have map[string]map[string]struct{}) error {
	names, err := fsx.ReadDirNames(dir)
	if err != nil {
		return err
	}
	var errs []error
	onDisk := make(map[string]bool, len(names))
	for _, n := range names {
		keys, ok := want[n]
		if ok && sameSet(have[n], keys) {
			onDisk[n] = true
			continue
		}
		if ok {
			if got, err := readList(dir, n); err == nil && sameKeys(got, keys) {
				onDisk[n] = true
				continue
			}
			st, err := fsx.Lstat(dir, n)
			if err == nil && !fsx.IsDir(&st) {
				continue // a rename replaces it below
			}
		}
		if err := removeAllAt(dir, n, dev); err != nil {
			errs = append(errs, err)
		}
	}
	for n, keys := range want {
		if !onDisk[n] {
			if err := writeList(dir, n, keys); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// sameSet reports whether set holds exactly keys, which has no repeats.
func sameSet(set map[string]struct{}, keys []string) bool {
	if len(set) != len(keys) {
		return false
	}
	for _, k := range keys {
		if _, ok := set[k]; !ok {
			return false
		}
	}
	return true
}

func sameKeys(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// setPodAnon rewrites the list of pod's anonymous volumes from the index.
func (s *Store) setPodAnon(pod string) error {
	return s.writeListLocked(s.podsFd, pod, sortedSet(s.idx.pods[pod]))
}

// forgetAnonLocked drops removed anonymous volumes from the lists of their
// pods. It reports whether the lists on disk match the index: a stale entry
// left by a failed write is harmless (RemovePodVolumes checks each volume's
// owner), and Reconcile rewrites the lists.
func (s *Store) forgetAnonLocked(keys []string) bool {
	touched := map[string]bool{}
	for _, k := range keys {
		if pod, ok := s.idx.owner[k]; ok {
			s.idx.dropAnon(k)
			touched[pod] = true
		}
	}
	ok := true
	for pod := range touched {
		if s.setPodAnon(pod) != nil {
			ok = false
		}
	}
	return ok
}

// writeListLocked is writeList through a file spare, when there is one: it
// writes the spare and renames it over the list, which a reader sees
// replaced whole, as writeList's own temporary file would be. A spare that
// fails is dropped and writeList does the work.
func (s *Store) writeListLocked(dir int, name string, keys []string) error {
	if len(keys) == 0 {
		return writeList(dir, name, keys)
	}
	spare, ok := s.takeSpareFileLocked()
	if !ok {
		return writeList(dir, name, keys)
	}
	err := fillFileAt(s.spare.fd, spare, listContent(keys), false)
	if err == nil {
		err = unix.Renameat(s.spare.fd, spare, dir, name)
	}
	if err != nil {
		unix.Unlinkat(s.spare.fd, spare, 0)
		return writeList(dir, name, keys)
	}
	return nil
}
