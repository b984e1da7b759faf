package plugin_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/plugin"
)

// TestImageVolumeAdoptionKeepsSharedVolume: a named volume that another
// container mounts already (with nocopy, so it is still empty and has no
// copy-up marker) is not exchanged for containerd's copy when a second pod
// mounts it at an image VOLUME: the first container's mount holds the
// volume's _data, and both containers must keep seeing one directory. The
// second container gets the copy-up hook, which fills _data in place.
func TestImageVolumeAdoptionKeepsSharedVolume(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	first := newContainer(hexID('1'), "p1", "writer")
	adj, err := rt.create(newPod("p1", "default", map[string]string{plugin.VolumesKey + "/pod": "- shared:/shared:nocopy"}), first)
	if err != nil {
		t.Fatal(err)
	}
	src := findMount(adj, "/shared")
	if src == nil {
		t.Fatalf("first container's mounts %+v, want one at /shared", adj.GetMounts())
	}
	// What runc's bind mount of the first container holds: _data itself.
	view, err := unix.Open(src.Source, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(view)

	second := newContainer(hexID('2'), "p2", "app")
	m, _ := runtimeImageVolume(t, rt, second.Id, "/data", map[string]string{"seed.txt": "from the image"})
	second.Mounts = []*api.Mount{m}
	adj, err = rt.create(newPod("p2", "default", map[string]string{plugin.VolumesKey + "/pod": "- shared:/data"}), second)
	if err != nil {
		t.Fatal(err)
	}
	dst := findMount(adj, "/data")
	if dst == nil || dst.Source != src.Source {
		t.Fatalf("second container's /data = %+v, want the volume %s", dst, src.Source)
	}

	// The first container writes; the second must see it.
	fd, err := unix.Openat(view, "from-writer", unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if _, err := os.Stat(filepath.Join(dst.Source, "from-writer")); err != nil {
		t.Errorf("the second container does not see what the first wrote into the shared volume: %v", err)
	}
	hooks := adj.GetHooks().GetCreateRuntime()
	if len(hooks) != 1 || !strings.Contains(strings.Join(hooks[0].Args, " "), "=/data") {
		t.Errorf("createRuntime hooks = %+v, want the copy-up hook for /data", hooks)
	}
}
