package plugin_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/nri/pkg/api"
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
	spares := spareInodes(t, rt.cfg.Root)

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
	if ino := info.Sys().(*syscall.Stat_t).Ino; !spares[ino] {
		t.Errorf("the new pod's copy-up record (inode %d) is not one of the spares made before the request %v", ino, spares)
	}
}
