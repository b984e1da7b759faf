package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestBudgetReadsNoVolumeJSON checks that the namespace budget of a new
// sized volume is checked without reading the metadata of the namespace's
// other volumes: the store holds its lock meanwhile, inside an NRI request,
// and a namespace of 40,000 volumes held it for seconds.
func TestBudgetReadsNoVolumeJSON(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	s.Reconfigure(WithSizePolicy(SizePolicy{NamespaceBytes: 1 << 30}))
	const n = 50
	for i := range n {
		if _, err := s.Create("shop", fmt.Sprintf("v%02d", i), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Create("shop", "first", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	opens := watchOpens(t, filepath.Join(root, "volumes", "shop"), n)
	if _, err := s.Create("shop", "second", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	if got := opens(); got != 0 {
		t.Errorf("creating a sized volume opened the volume.json of %d other volumes of its namespace; want none", got)
	}
}

// watchOpens watches the volume directories v00... of nsDir and returns a
// func that counts the opens of their volume.json since.
func watchOpens(t *testing.T, nsDir string, n int) func() int {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	for i := range n {
		if _, err := unix.InotifyAddWatch(fd, filepath.Join(nsDir, fmt.Sprintf("v%02d", i)), unix.IN_OPEN); err != nil {
			t.Fatal(err)
		}
	}
	return func() int {
		count := 0
		buf := make([]byte, 64<<10)
		for {
			m, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EAGAIN) {
				return count
			}
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off+unix.SizeofInotifyEvent <= m; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				if name == metaFile {
					count++
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}
}

// TestLedgerFollowsChanges checks the sums the budgets are checked against
// through creation, refusal, growth, removal, pruning, a reopen and a store
// made before the ledger existed.
func TestLedgerFollowsChanges(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	s.Reconfigure(WithSizePolicy(SizePolicy{NamespaceBytes: 40 << 20}))
	want := func(what string, bytes, count int64) {
		t.Helper()
		per, total, err := s.sizeSums()
		if err != nil {
			t.Fatal(err)
		}
		if got := per["shop"]; got != (SizeSum{Bytes: bytes, Count: count}) || total != got {
			t.Errorf("%s: shop sums %+v, total %+v; want %d bytes in %d volumes", what, got, total, bytes, count)
		}
	}
	for _, name := range []string{"a", "b"} {
		if _, err := s.Create("shop", name, CreateOptions{Size: 16 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	want("two volumes", 32<<20, 2)
	if _, err := s.Create("shop", "c", CreateOptions{Size: 16 << 20}); !errors.Is(err, ErrLimit) {
		t.Fatalf("over the budget: %v", err)
	}
	want("after a refusal", 32<<20, 2)
	if _, err := s.Grow("shop", "a", 24<<20); err != nil {
		t.Fatal(err)
	}
	want("after a growth", 40<<20, 2)
	if _, err := s.Grow("shop", "b", 24<<20); !errors.Is(err, ErrLimit) {
		t.Fatalf("growing over the budget: %v", err)
	}
	if err := s.Remove("shop", "b"); err != nil {
		t.Fatal(err)
	}
	want("after a removal", 24<<20, 1)
	anon := Request{Namespace: "shop", Owner: &Owner{PodSandboxID: "pod", Container: "c", Target: "/d"}, CreateOptions: CreateOptions{Size: 8 << 20}}
	if _, _, err := s.Acquire("ctr", []Request{anon}, nil); err != nil {
		t.Fatal(err)
	}
	want("with an anonymous one", 32<<20, 2)
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemovePodVolumes("pod"); err != nil {
		t.Fatal(err)
	}
	want("after its pod", 24<<20, 1)

	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, total, err := s2.sizeSums(); err != nil || total != (SizeSum{Bytes: 24 << 20, Count: 1}) {
		t.Errorf("reopened: total %+v, %v", total, err)
	}
	// A store from before the ledger: built once from volume.json.
	if err := os.Remove(filepath.Join(root, "volumes", ledgerFile)); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	s3.Reconfigure(WithSizePolicy(SizePolicy{NamespaceBytes: 40 << 20}))
	if _, err := s3.Create("shop", "d", CreateOptions{Size: 24 << 20}); !errors.Is(err, ErrLimit) {
		t.Errorf("a store without its ledger lets the budget through: %v", err)
	}
	if _, total, err := s3.sizeSums(); err != nil || total != (SizeSum{Bytes: 24 << 20, Count: 1}) {
		t.Errorf("rebuilt: total %+v, %v", total, err)
	}
}

// TestOvercommit checks the node's bound on the sum of sizes: a multiple of
// the store's file system's size, named with its numbers in the refusal.
func TestOvercommit(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		t.Fatal(err)
	}
	fsSize := int64(st.Blocks) * st.Bsize
	// A bound of 24 MiB on this file system.
	s.Reconfigure(WithSizePolicy(SizePolicy{Overcommit: float64(24<<20) / float64(fsSize)}))
	if _, err := s.Create("shop", "a", CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	_, err := s.Create("other", "b", CreateOptions{Size: 16 << 20})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("a volume over the node's bound, in another namespace: %v, want ErrLimit", err)
	}
	for _, want := range []string{"limits.overcommit", "32MiB", "16MiB", "of the store's file system"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	tot, err := s.Stats().Totals()
	if err != nil {
		t.Fatal(err)
	}
	if tot.Sized != (SizeSum{Bytes: 16 << 20, Count: 1}) || tot.FileSystem != fsSize || tot.Bound < 23<<20 || tot.Bound > 25<<20 {
		t.Errorf("Totals = %+v", tot)
	}
}

// TestCheckReportsLedgerDrift: a ledger that disagrees with the volumes
// (a crash between the two steps leaves a charge too many) is reported by
// Check with the way out, which works.
func TestCheckReportsLedgerDrift(t *testing.T) {
	requireLoop(t)
	s, root := openSized(t)
	if _, err := s.Create("shop", "a", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Fatalf("Check of a consistent store: %+v, %v", probs, err)
	}
	ledger := filepath.Join(root, "volumes", ledgerFile)
	if err := os.WriteFile(ledger, []byte(`{"namespaces":{"shop":{"bytes":16777216,"count":2}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	probs, err := s.Check()
	if err != nil || len(probs) != 1 || probs[0].Namespace != "shop" || !strings.Contains(probs[0].Reason, "16MiB in 2") ||
		!strings.Contains(probs[0].Reason, "8MiB in 1") || !strings.Contains(probs[0].Reason, "remove ROOT/volumes/.sizes") {
		t.Fatalf("Check of a drifted ledger: %+v, %v", probs, err)
	}
	if err := os.Remove(ledger); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if probs, err := s2.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check after the ledger was rebuilt: %+v, %v", probs, err)
	}
}

// TestTruncatedLedger: a ledger of sizes left empty or cut short (written
// without fsync, then a power loss) does not stop the store: the next Open
// rebuilds it from the volumes' metadata, durably, and sized volumes are
// created and removed with the sums right.
func TestTruncatedLedger(t *testing.T) {
	requireLoop(t)
	for _, tc := range []struct {
		name string
		cut  func(data []byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"cut short", func(data []byte) []byte { return data[:len(data)/2] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, root := openSized(t)
			for _, n := range []string{"a", "b"} {
				if _, err := s.Create("shop", n, CreateOptions{Size: 8 << 20}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			path := filepath.Join(root, "volumes", ledgerFile)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.cut(data), 0o600); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(root)
			if err != nil {
				t.Fatalf("Open with a broken ledger: %v", err)
			}
			t.Cleanup(func() { s2.Close() })
			if r := s2.repairs; len(r) != 1 || !strings.Contains(r[0], ledgerFile) {
				t.Errorf("Open's repairs are %q, want the ledger's rebuild", r)
			}
			if _, err := s2.Create("shop", "c", CreateOptions{Size: 8 << 20}); err != nil {
				t.Fatalf("Create with a broken ledger: %v", err)
			}
			if err := s2.Remove("shop", "a"); err != nil {
				t.Fatalf("Remove with a broken ledger: %v", err)
			}
			tot, err := s2.Stats().Totals()
			if err != nil {
				t.Fatal(err)
			}
			if want := (SizeSum{Bytes: 16 << 20, Count: 2}); tot.Sized != want {
				t.Errorf("the node's sums are %+v, want %+v", tot.Sized, want)
			}
			if probs := s2.checkLedger(); len(probs) != 0 {
				t.Errorf("the ledger disagrees with the metadata: %v", probs)
			}
		})
	}
}
