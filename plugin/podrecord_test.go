package plugin_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/containerd/nri/pkg/api"
	"golang.org/x/sys/unix"
)

// spareInodes returns the inode numbers of the store's file spares.
func spareInodes(t *testing.T, root string) map[uint64]bool {
	t.Helper()
	dir := filepath.Join(root, "volumes", ".spare")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]bool{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "f-") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out[info.Sys().(*syscall.Stat_t).Ino] = true
	}
	return out
}

// TestNewPodCopyUpRecordFromSpare: the copy-up hook of a new pod's first
// container charges the pod's copy-up budget (limits.copyUpMaxSizePerPod)
// in the pod's record, whose inode the plugin takes from its spares while
// it answers CreateContainer, so the hook, on the container's start path,
// opens a record rather than making one (issue 19: a container in a new
// pod started slower than one in a pod that had started one before).
func TestNewPodCopyUpRecordFromSpare(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	digest := rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{"Volumes":{"/data":{}}}}`)
	if !eventually(func() bool { return len(spareInodes(t, rt.cfg.Root)) >= 8 }) {
		t.Fatalf("the plugin keeps no file spares: %v", spareInodes(t, rt.cfg.Root))
	}
	events := watchRenames(t, rt.cfg.Root)

	pod := newPod("newpod", "default", nil)
	ctr := newContainer("c1", pod.Id, "app")
	ctr.Image = &api.Image{Name: "localhost/vol:e2e", ConfigDigest: digest}
	adj, err := rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	args := hookArgs(t, adj)
	if countArg(args, "--pod") != 1 {
		t.Fatalf("hook args %q: want the copy-up hook, charging pod %s", args, pod.Id)
	}
	record := filepath.Join(rt.cfg.Root, "volumes", ".copyup-bytes", pod.Id)
	info, err := os.Lstat(record)
	if err != nil {
		t.Fatalf("the new pod's copy-up record after CreateContainer: %v (the hook would make its inode)", err)
	}
	if !info.Mode().IsRegular() || info.Size() != 0 {
		t.Errorf("the new pod's copy-up record: %v, %d bytes; want an empty regular file", info.Mode(), info.Size())
	}
	// The request takes several spares, newest first, and each take wakes
	// the refiller, so the spare taken may be one made during the request:
	// the kernel's rename events say where the record came from.
	if !renamedFromSpare(t, events, pod.Id) {
		t.Errorf("the new pod's copy-up record was not a spare renamed into place")
	}
}

// renameEvents watches the spares and the copy-up records of a store.
type renameEvents struct {
	fd            int
	spare, record int
}

// watchRenames starts watching ROOT/volumes/.spare for names leaving it and
// ROOT/volumes/.copyup-bytes for names arriving.
func watchRenames(t *testing.T, root string) *renameEvents {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	records := filepath.Join(root, "volumes", ".copyup-bytes")
	if err := os.MkdirAll(records, 0o700); err != nil {
		t.Fatal(err)
	}
	ev := &renameEvents{fd: fd}
	if ev.spare, err = unix.InotifyAddWatch(fd, filepath.Join(root, "volumes", ".spare"), unix.IN_MOVED_FROM); err != nil {
		t.Fatal(err)
	}
	if ev.record, err = unix.InotifyAddWatch(fd, records, unix.IN_MOVED_TO|unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	return ev
}

// renamedFromSpare reports whether name arrived among the copy-up records
// by a rename out of the spares, and was never created there.
func renamedFromSpare(t *testing.T, ev *renameEvents, name string) bool {
	t.Helper()
	left := map[uint32]bool{}
	var arrived []uint32
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(ev.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			e := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(e.Len)]
			got := strings.TrimRight(string(nameBytes), "\x00")
			switch {
			case int(e.Wd) == ev.spare && e.Mask&unix.IN_MOVED_FROM != 0:
				left[e.Cookie] = true
			case int(e.Wd) == ev.record && got == name && e.Mask&unix.IN_CREATE != 0:
				return false
			case int(e.Wd) == ev.record && got == name && e.Mask&unix.IN_MOVED_TO != 0:
				arrived = append(arrived, e.Cookie)
			}
			off += unix.SizeofInotifyEvent + int(e.Len)
		}
	}
	for _, c := range arrived {
		if left[c] {
			return true
		}
	}
	return false
}
