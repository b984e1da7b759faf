package idmap

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// userns starts a process in a new user namespace that maps container ids
// 0-65535 to host ids 100000 onwards, and returns the path of its namespace.
func userns(t *testing.T) string {
	t.Helper()
	testutil.RequireRoot(t, "needs root")
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user"
}

// mountFS mounts a fresh file system of type fstype on a temporary directory.
func mountFS(t *testing.T, fstype string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(fstype, dir, fstype, 0, ""); err != nil {
		t.Fatalf("mount %s: %v", fstype, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func TestCheck(t *testing.T) {
	ns := userns(t)
	t.Run("tmpfs can be idmapped", func(t *testing.T) {
		if err := Check(mountFS(t, "tmpfs"), ns); err != nil {
			t.Fatalf("Check on tmpfs: %v", err)
		}
	})
	t.Run("ramfs cannot", func(t *testing.T) {
		dir := mountFS(t, "ramfs")
		for i := 0; i < 2; i++ { // the second answer comes from the cache
			err := Check(dir, ns)
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Check on ramfs = %v, want ErrUnsupported", err)
			}
			if want := "ramfs"; !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name %s and %s", err, want, dir)
			}
		}
	})
	t.Run("missing user namespace is no answer", func(t *testing.T) {
		dir := mountFS(t, "ramfs")
		supported.Delete(int64(unix.RAMFS_MAGIC))
		err := Check(dir, "/proc/self/ns/no-such")
		if !errors.Is(err, ErrNoUserNS) || errors.Is(err, ErrUnsupported) {
			t.Fatalf("Check with no user namespace = %v, want ErrNoUserNS", err)
		}
	})
}

func TestToContainer(t *testing.T) {
	m := &Mapping{
		UIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}},
		GIDs: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 131072, Size: 1000}, {ContainerID: 1000, HostID: 200000, Size: 10}},
	}
	for _, tc := range []struct{ uid, gid, wantUID, wantGID uint32 }{
		{65536, 131072, 0, 0},
		{65536 + 999, 200003, 999, 1003},
		{65535, 131072 + 1000, overflowID, overflowID}, // just outside each range
		{65536 + 65535, 200009, 65535, 1009},
		{0, 0, overflowID, overflowID},
	} {
		u, g := m.ToContainer(tc.uid, tc.gid)
		if u != tc.wantUID || g != tc.wantGID {
			t.Errorf("ToContainer(%d, %d) = %d, %d; want %d, %d", tc.uid, tc.gid, u, g, tc.wantUID, tc.wantGID)
		}
	}
}

func TestFromSpec(t *testing.T) {
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	if m, err := FromSpec(&specs.Spec{Linux: &specs.Linux{}}); m != nil || err != nil {
		t.Errorf("no user namespace: %v, %v", m, err)
	}
	withNS := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.UserNamespace, Path: "/proc/1/ns/user"}}, UIDMappings: ids, GIDMappings: ids}}
	if m, err := FromSpec(withNS); err != nil || m == nil || m.UIDs[0].HostID != 65536 {
		t.Errorf("user namespace: %v, %v", m, err)
	}
	withNS.Linux.GIDMappings = nil
	if _, err := FromSpec(withNS); err == nil {
		t.Error("a user namespace without gid mappings was accepted")
	}
}
