package volumes

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/snapfs"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// recordSize is the size of one record of the test writer: a sequence
// number, filler derived from it, and a CRC32 of the rest.
const recordSize = 64

func testRecord(seq uint64) []byte {
	b := make([]byte, recordSize)
	binary.LittleEndian.PutUint64(b, seq)
	for i := 8; i < recordSize-4; i++ {
		b[i] = byte(seq*31 + uint64(i))
	}
	binary.LittleEndian.PutUint32(b[recordSize-4:], crc32.ChecksumIEEE(b[:recordSize-4]))
	return b
}

// checkRecords reports how many whole, valid records log holds, failing the
// test unless they are 0, 1, 2, ... with no torn or foreign record.
func checkRecords(t *testing.T, log string) uint64 {
	t.Helper()
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%recordSize != 0 {
		t.Fatalf("%s: %d bytes, a torn record at the end", log, len(data))
	}
	for i := 0; i < len(data); i += recordSize {
		want := testRecord(uint64(i / recordSize))
		if string(data[i:i+recordSize]) != string(want) {
			t.Fatalf("%s: record %d is not the one written", log, i/recordSize)
		}
	}
	return uint64(len(data) / recordSize)
}

// writer appends fsynced records to its files until stopped; synced counts
// the records durable so far.
type writer struct {
	synced atomic.Uint64
	stop   chan struct{}
	done   chan error
}

// startWriter appends record n to each of paths in turn, fsyncing each;
// synced counts the records in all of them.
func startWriter(t *testing.T, paths ...string) *writer {
	t.Helper()
	files := make([]*os.File, 0, len(paths))
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			t.Fatal(err)
		}
		files = append(files, f)
	}
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
		for seq := uint64(0); ; seq++ {
			select {
			case <-w.stop:
				w.done <- nil
				return
			default:
			}
			for _, f := range files {
				if _, err := f.Write(testRecord(seq)); err != nil {
					w.done <- err
					return
				}
				if err := f.Sync(); err != nil {
					w.done <- err
					return
				}
			}
			w.synced.Store(seq + 1)
		}
	}()
	return w
}

func (w *writer) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Fatalf("writer: %v", err)
	}
}

// waitProgress waits until the writer has synced more than n records.
func (w *writer) waitProgress(t *testing.T, n uint64) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); w.synced.Load() <= n; {
		if time.Now().After(end) {
			t.Fatalf("the writer made no progress past %d records in 30s: still frozen?", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// xfsRoot makes an xfs with reflinks in a loop file and returns a directory
// on it, unmounted when the test ends.
func xfsRoot(t testing.TB) string {
	t.Helper()
	return xfsRootWith(t, true)
}

// xfsRootWith is xfsRoot on an xfs made with reflinks or without.
func xfsRootWith(t testing.TB, reflink bool) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("no mkfs.xfs (xfsprogs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 1<<30); err != nil {
		t.Fatal(err)
	}
	opt := "reflink=0"
	if reflink {
		opt = "reflink=1"
	}
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", opt, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount xfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		fsx.UnmountUnder(mnt)
		for try := 0; try < 100; try++ {
			if unix.Unmount(mnt, 0) != nil {
				break
			}
		}
	})
	return filepath.Join(mnt, "store")
}

// openSizedAt opens a store at root, taking down what the test leaves.
func openSizedAt(t testing.TB, root string) *Store {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		thawAllUnder(s.dir)
		fsx.UnmountUnder(s.dir)
	})
	return s
}

// thawAllUnder thaws whatever a failed test left frozen below dir.
func thawAllUnder(dir string) {
	mounts, _ := fsx.MountsUnder(dir)
	for _, mp := range mounts {
		if fd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			_ = snapfs.Thaw(fd)
			unix.Close(fd)
		}
	}
}

func e2fsck(t *testing.T, img string) {
	t.Helper()
	path, err := sizer.LookTool("e2fsck")
	if err != nil {
		t.Skip(err)
	}
	if out, err := exec.Command(path, "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

// TestSnapshotImageWhileWriting takes snapshots of a sized volume while a
// writer appends fsynced records, on a host file system without reflinks
// (ext4: a sparse copy) and on xfs with them (a reflink): every snapshot
// passes e2fsck, and its clone, mounted, holds every record synced before
// the snapshot began and no torn one.
func TestSnapshotImageWhileWriting(t *testing.T) {
	requireLoop(t)
	for _, tc := range []struct {
		name string
		root func(t testing.TB) string
		want snapfs.Method
	}{
		{"ext4-host", func(t testing.TB) string { return t.TempDir() }, snapfs.SparseCopy},
		{"xfs-reflink", xfsRoot, snapfs.Reflink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openSizedAt(t, tc.root(t))
			if _, err := s.Create("default", "db", CreateOptions{Size: 64 << 20}); err != nil {
				t.Fatal(err)
			}
			vols, _, err := s.Acquire("writer-ctr", []Request{{Namespace: "default", Name: "db"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			w := startWriter(t, filepath.Join(vols[0].Mountpoint, "log"))
			type taken struct {
				snap   string
				before uint64
			}
			var snaps []taken
			for i := 0; i < 5; i++ {
				w.waitProgress(t, w.synced.Load())
				before := w.synced.Load()
				sn, err := s.Snapshots().Create("default", "db", "s"+string(rune('0'+i)), SnapshotOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if sn.Copy != tc.want || sn.Backend != BackendImage || sn.Size != 64<<20 {
					t.Errorf("snapshot %s: copy %q, backend %q, size %d; want %q, image, 64MiB", sn.Name, sn.Copy, sn.Backend, sn.Size, tc.want)
				}
				snaps = append(snaps, taken{sn.Name, before})
			}
			w.waitProgress(t, w.synced.Load())
			w.finish(t)
			list, err := s.Snapshots().List("default", "db")
			if err != nil || len(list) != len(snaps) {
				t.Fatalf("ListSnapshots: %d snapshots, %v; want %d", len(list), err, len(snaps))
			}
			for i, sn := range snaps {
				e2fsck(t, filepath.Join(s.dir, "default", "db", snapshotsDir, sn.snap, imageFile))
				clone := "clone-" + sn.snap
				res, err := s.Clone("default", "db", sn.snap, clone, CloneOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if res.Copy != tc.want {
					t.Errorf("clone of %s copied by %q, want %q", sn.snap, res.Copy, tc.want)
				}
				ctr := "reader-" + sn.snap
				cv, _, err := s.Acquire(ctr, []Request{{Namespace: "default", Name: clone}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				n := checkRecords(t, filepath.Join(cv[0].Mountpoint, "log"))
				if n < sn.before {
					t.Errorf("snapshot %d holds %d records, but %d were synced before it began", i, n, sn.before)
				}
				if err := s.Release(ctr); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Release("writer-ctr"); err != nil {
				t.Fatal(err)
			}
			if probs, err := s.Check(); err != nil || len(probs) != 0 {
				t.Errorf("Check: %v, %v", probs, err)
			}
		})
	}
}

// snapshotChildEnv makes TestSnapshotChild take a snapshot of the volume
// default/db of the store at its value, and hang while it holds it frozen.
const snapshotChildEnv = "NRI_VOLUMES_SNAPSHOT_CHILD_ROOT"

// TestSnapshotChild is the child process of TestSnapshotKilledWhileFrozen.
func TestSnapshotChild(t *testing.T) {
	root := os.Getenv(snapshotChildEnv)
	if root == "" {
		t.Skip("only run as the child of TestSnapshotKilledWhileFrozen")
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Snapshots().Create("default", "db", "killed", SnapshotOptions{})
	t.Fatalf("the snapshot returned (%v); it should hang frozen until killed", err)
}

// TestSnapshotKilledWhileFrozen kills a process with SIGKILL while its
// snapshot holds a volume frozen: the writer hangs, and the next Open of
// the store thaws the volume, and the writer goes on.
func TestSnapshotKilledWhileFrozen(t *testing.T) {
	requireLoop(t)
	root := t.TempDir()
	s := openSizedAt(t, root)
	if _, err := s.Create("default", "db", CreateOptions{Size: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("writer-ctr", []Request{{Namespace: "default", Name: "db"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, filepath.Join(vols[0].Mountpoint, "log"))
	w.waitProgress(t, 10)

	marker, kill := startFrozenChild(t, s, root)
	// An Open while the snapshot lives leaves its freeze alone.
	s2, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("an Open removed the marker of a live snapshot: %v", err)
	}
	kill()
	stalled := w.synced.Load()
	s3, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	w.waitProgress(t, stalled)
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the freeze marker is still there after the thaw: %v", err)
	}
	// The killed snapshot left nothing, and the next one works.
	if list, err := s3.Snapshots().List("default", "db"); err != nil || len(list) != 0 {
		t.Errorf("snapshots after the killed one: %v, %v", list, err)
	}
	if _, err := s3.Snapshots().Create("default", "db", "after", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	w.finish(t)
	if entries, _ := os.ReadDir(filepath.Join(s.dir, "default", "db", snapshotsDir)); len(entries) != 1 {
		t.Errorf("snapshots directory holds %v, want only the snapshot \"after\"", entries)
	}
	if err := s3.Release("writer-ctr"); err != nil {
		t.Fatal(err)
	}
}

// A snapshot of a plain volume says how its data was copied: on an xfs
// made without reflinks, copy_file_range copies, so it says "copy", not
// "reflink" (only the file system's type was asked before).
func TestSnapshotPlainCopyMethod(t *testing.T) {
	testutil.RequireRoot(t, "needs root to mount an xfs")
	for _, reflink := range []bool{false, true} {
		s := openSizedAt(t, xfsRootWith(t, reflink))
		if _, err := s.Create("default", "v", CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		vols, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "v"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, "f"), bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Release("ctr"); err != nil {
			t.Fatal(err)
		}
		sn, err := s.Snapshots().Create("default", "v", "s1", SnapshotOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := snapfs.SparseCopy
		if reflink {
			want = snapfs.Reflink
		}
		if sn.Copy != want {
			t.Errorf("xfs reflink=%v: snapshot copied by %q, want %q", reflink, sn.Copy, want)
		}
	}
}
