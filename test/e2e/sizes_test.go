package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestSizedVolumes checks sized volumes with the store on a plain directory
// of the host's disk, where the image backend (ext4 in a file on a loop
// device) enforces them.
func TestSizedVolumes(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	checkSizedVolumes(t, e, "image")
}

// TestSizedVolumesBtrfs runs the same story with the store on a btrfs
// (made in a sparse file and loop-mounted by the test), where sized volumes
// use the image backend too: a btrfs qgroup limit does not hold against a
// pod that makes a subvolume (TestBtrfsSubvolumesInPod).
func TestSizedVolumesBtrfs(t *testing.T) {
	harness.RequireRoot(t)
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		t.Fatalf("mkfs.btrfs (btrfs-progs) is needed: %v", err)
	}
	mnt := harness.LoopBtrfs(t, t.TempDir(), 1<<30)
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{Root: filepath.Join(mnt, "store")})
	checkSizedVolumes(t, e, "image")
}

// checkSizedVolumes is the story of TestSizedVolumes and TestSizedVolumesBtrfs:
// a 10 MiB volume from an annotation stops a 20 MiB write, a 5 MiB one made
// with the CLI is enforced in a pod, inspect -s reports the use, data and
// limit survive unmounting everything and a plugin restart, and rm leaves no
// loop device and no mount.
func checkSizedVolumes(t *testing.T, e *env, backend string) {
	t.Helper()
	e.volume("create", "--opt", "size=5Mi", "cli5")
	pod := e.cr.RunPod("sized", "default", "uid-sized", map[string]string{
		podKey: "- {source: data, target: /data, size: 10Mi}\n- cli5:/cli",
	})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)

	checkFull(t, e, id, "/data", 20)
	checkFull(t, e, id, "/cli", 10)
	if backend == "image" {
		checkDf(t, e, id, "/data", 10<<10)
		checkDf(t, e, id, "/cli", 5<<10)
	}
	e.cr.Sh(id, "dd if=/dev/zero of=/data/keep bs=1M count=3 2>/dev/null && echo kept > /data/note && sync")
	v := inspectOne(t, e, "data")
	if v.Limit != 10<<20 || v.Backend != backend {
		t.Errorf("inspect data: Limit %d, Backend %q; want %d, %q", v.Limit, v.Backend, 10<<20, backend)
	}
	if v.Size == nil || *v.Size < 3<<20 || *v.Size > 4<<20 {
		t.Errorf("inspect -s data: Size %v, want about 3 MiB", v.Size)
	}

	// A reboot, as far as the store can tell: no container, no mount, a
	// new plugin process.
	e.cr.RmPod(pod)
	e.plugin.Stop()
	for _, mp := range mountsUnder(t, e.plugin.Root) {
		if err := syscall.Unmount(mp, 0); err != nil {
			t.Fatalf("unmount %s: %v", mp, err)
		}
	}
	if m := mountsUnder(t, e.plugin.Root); len(m) != 0 {
		t.Fatalf("mounts left under the store: %v", m)
	}
	e.plugin.Start(t)
	pod = e.cr.RunPod("sized-again", "default", "uid-sized-again", map[string]string{podKey: "- data:/data"})
	id = e.cr.RunContainer(pod, "app", appImage, nil, nil)
	if got := e.cr.Exec(id, "cat", "/data/note"); got != "kept\n" {
		t.Errorf("after the restart /data/note = %q", got)
	}
	e.cr.Sh(id, "rm /data/keep")
	checkFull(t, e, id, "/data", 20)
	if backend == "image" {
		checkDf(t, e, id, "/data", 10<<10)
	}
	e.cr.RmPod(pod)

	e.volume("rm", "data", "cli5")
	if !eventually(func() bool { return len(loopsUnder(e.plugin.Root)) == 0 }) {
		t.Errorf("loop devices left after rm: %v", loopsUnder(e.plugin.Root))
	}
	if m := mountsUnder(t, e.plugin.Root); len(m) != 0 {
		t.Errorf("mounts left after rm: %v", m)
	}
	if out := e.volume("check", "-A"); strings.Count(out, "\n") != 1 {
		t.Errorf("volume check after rm:\n%s", out)
	}
}

// TestSizedImageVolumeDefault gives image volumes a size by configuration:
// the image's content is copied into the sized file system, df shows the
// size, and content that does not fit fails the container with a message
// naming the volume and its size.
func TestSizedImageVolumeDefault(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{IgnoreImageDefinedVolumes: true}, harness.PluginConfig{
		Extra: "sizes:\n  defaultSize: 16Mi\n",
	})
	e.ctd.Import(t, dbImage)
	pod := e.cr.RunPod("db", "default", "uid-db", nil)
	id := e.cr.RunContainer(pod, "db", dbImage.Name, nil, nil)
	if got := e.cr.Exec(id, "cat", "/data/seed.txt"); got != "seeded by the image\n" {
		t.Errorf("/data/seed.txt = %q", got)
	}
	if got := trim(e.cr.Exec(id, "ls", "-A", "/data")); got != "seed.txt" {
		t.Errorf("/data holds %q, want only the image's seed.txt", got)
	}
	if got := trim(e.cr.Exec(id, "stat", "-c", "%u:%g %a", "/data")); got != "999:999 750" {
		t.Errorf("stat /data = %q, want the image's 999:999 750", got)
	}
	checkDf(t, e, id, "/data", 16<<10)

	big := harness.Image{
		Name:       "localhost/big:e2e",
		Entrypoint: []string{"/bin/sleep", "2147483647"},
		Volumes:    []string{"/data"},
		Files:      []harness.File{harness.RegularFile("/data/blob", strings.Repeat("x", 20<<20), 0o644, 0, 0)},
	}
	e.ctd.Import(t, big)
	pod2 := e.cr.RunPod("big", "default", "uid-big", nil)
	bigID, err := e.cr.CreateContainer(pod2, "big", big.Name, nil, nil)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	res := e.cr.Run("start", bigID)
	if res.Err == nil {
		t.Fatal("a container whose image VOLUME holds 20 MiB started on a 16 MiB volume")
	}
	for _, want := range []string{"does not fit its size 16MiB", "/data", "copy-up stopped after"} {
		if !strings.Contains(res.Err.Error(), want) {
			t.Errorf("start error does not say %q: %v", want, res.Err)
		}
	}
}

// checkFull writes mib MiB into dir and expects the write to fail for lack
// of space (ENOSPC on ext4, EDQUOT on btrfs).
func checkFull(t *testing.T, e *env, id, dir string, mib int) {
	t.Helper()
	out, err := e.cr.ExecErr(id, "sh", "-c", "dd if=/dev/zero of="+dir+"/big bs=1M count="+strconv.Itoa(mib)+" && sync")
	if err == nil {
		t.Errorf("writing %d MiB into %s succeeded: %s", mib, dir, out)
	} else if msg := err.Error(); !strings.Contains(msg, "No space left on device") && !strings.Contains(msg, "quota exceeded") {
		t.Errorf("writing %d MiB into %s failed, but not for space: %v", mib, dir, err)
	}
	e.cr.Exec(id, "rm", "-f", dir+"/big")
}

// checkDf expects df in the container to show dir's size as exactly kib KiB.
func checkDf(t *testing.T, e *env, id, dir string, kib int64) {
	t.Helper()
	out := e.cr.Exec(id, "df", "-k", dir)
	if total, ok := dfTotalKiB(out); !ok || total != kib {
		t.Errorf("df -k %s shows %d KiB, want %d:\n%s", dir, total, kib, out)
	}
}

// dfTotalKiB reads the size column of busybox's df -k for one file system.
func dfTotalKiB(out string) (int64, bool) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(lines) < 2 || len(f) < 6 {
		return 0, false
	}
	// The file system's name may wrap onto a line of its own.
	total, err := strconv.ParseInt(f[len(f)-5], 10, 64)
	return total, err == nil
}

// sizedVolume is what the tests read of `volume inspect -s`.
type sizedVolume struct {
	Name    string
	Limit   int64
	Backend string
	Size    *int64
}

func inspectOne(t *testing.T, e *env, name string) sizedVolume {
	t.Helper()
	var vols []sizedVolume
	out := e.volume("inspect", "-s", name)
	if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 1 {
		t.Fatalf("inspect -s %s: %v\n%s", name, err, out)
	}
	return vols[0]
}

// mountsUnder lists the mount points at or below dir, deepest last.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	points, err := fsx.MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	return points
}

// loopsUnder lists the loop devices backed by a file below dir.
func loopsUnder(dir string) []string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	var out []string
	entries, _ := os.ReadDir("/sys/block")
	for _, en := range entries {
		b, err := os.ReadFile(filepath.Join("/sys/block", en.Name(), "loop", "backing_file"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			out = append(out, en.Name()+"="+strings.TrimSpace(string(b)))
		}
	}
	return out
}
