package volumes

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// The ledger of sizes: ROOT/volumes/.sizes holds, per namespace, the sum of
// the sizes of its sized volumes and their count, so the budgets
// (limits.namespaceBytes, limits.overcommit) are checked in O(1) under the
// store's lock instead of by reading every volume.json of a namespace.
//
// It is written under the exclusive lock, replaced atomically, by every
// change of a sized volume: a charge before the volume gets its name (or its
// new size), a refund after it left its name. A process that dies between
// the two steps leaves a charge too many, never one too few: a budget errs
// on the side of refusing. A charge for a volume made durably is durable
// with it; the charge of a volume made PersistLater is made durable by its Persist,
// before any container runs on it. A store without the file (made before it
// existed) gets it at Open, by the one scan of every volume.json.
// It is ledgerFile.
//
// maxLedgerSize bounds what is read of it: far more than the entries of
// every namespace a node has.
const maxLedgerSize = 16 << 20

// ledger is the in-memory copy of the file, part of the index. snaps holds,
// per namespace, the bytes its volumes' snapshots hold (see snapshotsAt),
// which count against limits.namespaceBytes but not against the node's
// bound (a snapshot reserves nothing, it holds blocks), and their number,
// for the metrics.
type ledger struct {
	ns    map[string]SizeSum
	total SizeSum
	snaps map[string]SizeSum
}

func newLedger() *ledger {
	return &ledger{ns: map[string]SizeSum{}, snaps: map[string]SizeSum{}}
}

func (l *ledger) addSnapshots(ns string, bytes, count int64) {
	sum := l.snaps[ns]
	sum.Bytes = max(sum.Bytes+bytes, 0)
	sum.Count = max(sum.Count+count, 0)
	if sum.Bytes > 0 || sum.Count > 0 {
		l.snaps[ns] = sum
	} else {
		delete(l.snaps, ns)
	}
}

// namespaceBytes is what counts against namespace ns's budget.
func (l *ledger) namespaceBytes(ns string) int64 {
	return l.ns[ns].Bytes + l.snaps[ns].Bytes
}

func (l *ledger) add(ns string, bytes, count int64) {
	sum := l.ns[ns]
	sum.Bytes += bytes
	sum.Count += count
	if sum.Count <= 0 || sum.Bytes <= 0 {
		delete(l.ns, ns)
	} else {
		l.ns[ns] = sum
	}
	l.total.Bytes += bytes
	l.total.Count += count
	if l.total.Count <= 0 || l.total.Bytes <= 0 {
		l.total = SizeSum{}
	}
}

type ledgerDoc struct {
	Namespaces map[string]SizeSum `json:"namespaces"`
	// Snapshots holds the bytes, SnapshotCounts the number, of each
	// namespace's snapshots: two maps, so that a ledger written before the
	// counts reads as it did.
	Snapshots      map[string]int64 `json:"snapshots,omitempty"`
	SnapshotCounts map[string]int64 `json:"snapshotCounts,omitempty"`
}

// loadLedger reads the ledger; a store without one, or with one that does
// not parse (Open rewrites both, so only one opened for copy-up), gets one
// built by a scan.
func (s *Store) loadLedger() (*ledger, error) {
	l, err := s.readLedger()
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errBroken) {
		return s.scanLedger()
	}
	return l, err
}

// readLedger reads the ledger as it is: a missing file matches
// fs.ErrNotExist, one that does not parse errBroken.
func (s *Store) readLedger() (*ledger, error) {
	l := newLedger()
	data, err := fsx.ReadFile(s.dirFd, ledgerFile, maxLedgerSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("read the ledger of sizes %s: %w", ledgerFile, err)
	}
	var doc ledgerDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("read the ledger of sizes %s: %w: %w", ledgerFile, errBroken, err)
	}
	for ns, sum := range doc.Namespaces {
		if ValidateNamespace(ns) == nil && sum.Bytes > 0 && sum.Count > 0 {
			l.add(ns, sum.Bytes, sum.Count)
		}
	}
	for ns, n := range doc.Snapshots {
		if ValidateNamespace(ns) == nil {
			l.addSnapshots(ns, n, 0)
		}
	}
	for ns, n := range doc.SnapshotCounts {
		if ValidateNamespace(ns) == nil {
			l.addSnapshots(ns, 0, n)
		}
	}
	return l, nil
}

// scanLedger sums the sizes in every volume.json of the store.
func (s *Store) scanLedger() (*ledger, error) {
	l := newLedger()
	err := scanAt(s.dirFd, "", func(ns string, nsFd int, name string) error {
		if v, err := s.loadVolume(nsFd, ns, name); err == nil && v.Limit > 0 {
			l.add(ns, v.Limit, 1)
		}
		sum := snapshotsAt(nsFd, name)
		l.addSnapshots(ns, sum.Bytes, sum.Count)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// chargeLocked adds bytes and count to namespace ns's sums and writes the
// ledger, durably when asked; negative values refund.
func (s *Store) chargeLocked(ns string, bytes, count int64, durable bool) error {
	s.idx.sizes.add(ns, bytes, count)
	if err := writeLedger(s.dirFd, s.idx.sizes, durable); err != nil {
		// The file is as it was: so is the memory.
		s.idx.sizes.add(ns, -bytes, -count)
		return err
	}
	return nil
}

func writeLedger(dirFd int, l *ledger, durable bool) error {
	doc := ledgerDoc{Namespaces: l.ns, Snapshots: map[string]int64{}, SnapshotCounts: map[string]int64{}}
	for ns, sum := range l.snaps {
		if sum.Bytes > 0 {
			doc.Snapshots[ns] = sum.Bytes
		}
		if sum.Count > 0 {
			doc.SnapshotCounts[ns] = sum.Count
		}
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if err := replaceFileAt(dirFd, ledgerFile, data, durable); err != nil {
		return fmt.Errorf("write the ledger of sizes %s: %w", ledgerFile, err)
	}
	return nil
}

// ensureLedgerLocked writes the ledger of a store that has none, or whose
// ledger does not parse, from the one scan of every volume.json it takes, at
// Open: not inside a request, and once. A ledger is written without fsync
// when a volume is made PersistLater or refunded, so a power loss can leave
// it empty or cut short; rebuilt, it errs on no side, and its rebuild is
// the warning returned (with a nil error) for the caller to log.
func (s *Store) ensureLedgerLocked() (warning string, err error) {
	_, err = s.readLedger()
	switch {
	case err == nil:
		return "", nil
	case errors.Is(err, errBroken):
		warning = fmt.Sprintf("%v; rebuilt from the volumes' metadata", err)
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	l, err := s.scanLedger()
	if err != nil {
		return "", err
	}
	return warning, writeLedger(s.dirFd, l, true)
}

// chargeSnapshotsLocked adds bytes held by count snapshots to namespace
// ns's sums and writes the ledger durably; negative values refund.
func (s *Store) chargeSnapshotsLocked(ns string, bytes, count int64) error {
	if bytes == 0 && count == 0 {
		return nil
	}
	s.idx.sizes.addSnapshots(ns, bytes, count)
	if err := writeLedger(s.dirFd, s.idx.sizes, true); err != nil {
		s.idx.sizes.addSnapshots(ns, -bytes, -count)
		return err
	}
	return nil
}

// refundLocked gives back the size of a sized volume that left its name.
// The ledger is best effort here: a refund lost keeps a charge too many.
func (s *Store) refundLocked(ns string, size int64) {
	if size > 0 && s.idx != nil {
		_ = s.chargeLocked(ns, -size, -1, false)
	}
}

// syncLedger makes the ledger durable; Persist calls it for a sized volume made
// without its fsyncs.
func (s *Store) syncLedger() error {
	fd, err := unix.Openat(s.dirFd, ledgerFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "openat", Path: ledgerFile, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &os.PathError{Op: "fsync", Path: ledgerFile, Err: err}
	}
	if err := unix.Fsync(s.dirFd); err != nil {
		return &os.PathError{Op: "fsync", Path: ".", Err: err}
	}
	return nil
}

// checkLedger compares the ledger with what the volumes' metadata adds up
// to, namespace by namespace, under the store's lock: Check's one scan.
func (s *Store) checkLedger() []Problem {
	var probs []Problem
	fix := "remove ROOT/volumes/" + ledgerFile + " to have the next open rebuild it"
	have, err := s.readLedger()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the next Open writes it
	}
	if err != nil {
		return []Problem{{Reason: fmt.Sprintf("%v; %s", err, fix)}}
	}
	want, err := s.scanLedger()
	if err != nil {
		return nil // the scan's own error is Check's
	}
	seen := map[string]bool{}
	for _, l := range []*ledger{have, want} {
		for ns := range l.ns {
			if seen[ns] || have.ns[ns] == want.ns[ns] {
				continue
			}
			seen[ns] = true
			h, w := have.ns[ns], want.ns[ns]
			probs = append(probs, Problem{Namespace: ns, Reason: fmt.Sprintf(
				"the ledger of sizes counts %s in %d sized volume(s), their metadata %s in %d (a crash between a volume's change and the ledger's leaves a charge too many); %s",
				FormatBytes(h.Bytes), h.Count, FormatBytes(w.Bytes), w.Count, fix)})
		}
	}
	for _, l := range []*ledger{have, want} {
		for ns := range l.snaps {
			if seen[ns] || have.snaps[ns] == want.snaps[ns] {
				continue
			}
			seen[ns] = true
			probs = append(probs, Problem{Namespace: ns, Reason: fmt.Sprintf(
				"the ledger of sizes counts %s held by %d snapshot(s), the snapshots %s by %d; %s",
				FormatBytes(have.snaps[ns].Bytes), have.snaps[ns].Count, FormatBytes(want.snaps[ns].Bytes), want.snaps[ns].Count, fix)})
		}
	}
	sort.Slice(probs, func(i, j int) bool { return probs[i].Namespace < probs[j].Namespace })
	return probs
}
