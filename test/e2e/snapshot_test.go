package e2e

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// writerScript appends numbered records with the MD5 of their number, each
// by one write and fsynced, until the container goes.
const writerScript = `sh -c 'i=0; while :; do printf "%08d %s\n" $i "$(echo $i | md5sum | cut -c1-32)" | ` +
	`dd of=/data/log oflag=append conv=notrunc,fsync 2>/dev/null; i=$((i+1)); done' >/dev/null 2>&1 &`

// checkLog fails the test unless log holds records 0, 1, 2, ... each whole
// and with its checksum, and returns how many.
func checkLog(t *testing.T, what, log string) int {
	t.Helper()
	if log == "" {
		return 0
	}
	if !strings.HasSuffix(log, "\n") {
		t.Errorf("%s: a torn record at the end: %q", what, log[max(0, len(log)-50):])
	}
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	for i, l := range lines {
		sum := md5.Sum([]byte(strconv.Itoa(i) + "\n"))
		if want := fmt.Sprintf("%08d %s", i, hex.EncodeToString(sum[:])); l != want {
			t.Fatalf("%s: record %d is %q, want %q", what, i, l, want)
		}
	}
	return len(lines)
}

// hostRecords counts the whole records of the log in the volume, as the host
// sees it now.
func hostRecords(t *testing.T, e *env) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.plugin.VolumeDir("default", "db"), "log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestSnapshotWhileContainerWrites: a container appends fsynced records to a
// sized volume while the CLI takes a snapshot every 100 ms; every snapshot
// passes e2fsck, and its clone holds every record written before it and no
// torn one; one clone serves a pod. A CLI killed while it holds the volume
// frozen blocks the writer until the running plugin, the next CLI command,
// or a plugin start thaws it.
//
// The store is on the host's file system (ext4 here: the image is copied,
// sparse-aware), and on an xfs with reflinks and a btrfs the test makes (a
// reflink).
func TestSnapshotWhileContainerWrites(t *testing.T) {
	for _, tool := range []string{"e2fsck", "debugfs", "mkfs.xfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (e2fsprogs, xfsprogs) is needed: %v", tool, err)
		}
	}
	t.Run("host", func(t *testing.T) { checkSnapshots(t, "", "copy") })
	t.Run("xfs", func(t *testing.T) {
		harness.RequireRoot(t)
		// 15 clones and the volume, 64 MiB each, within limits.overcommit 1.
		checkSnapshots(t, filepath.Join(harness.LoopXFS(t, t.TempDir(), 2<<30), "store"), "reflink")
	})
	// On btrfs a sized volume is an image too (a qgroup cannot hold a
	// size, see Sizes), cloned with btrfs's reflinks.
	t.Run("btrfs", func(t *testing.T) {
		harness.RequireRoot(t)
		checkSnapshots(t, filepath.Join(harness.LoopBtrfs(t, t.TempDir(), 2<<30), "store"), "reflink")
	})
}

// checkSnapshots is the story of TestSnapshotWhileContainerWrites with the
// store at root ("" for the harness's default), where snapshots are copied
// by copy.
func checkSnapshots(t *testing.T, root, copy string) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{Root: root})
	pod := e.cr.RunPod("db", "default", "uid-db", map[string]string{podKey: "- {source: db, target: /data, size: 64Mi}"})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(id, writerScript)
	if !eventually(func() bool { return hostRecords(t, e) > 10 }) {
		t.Fatal("the writer wrote nothing")
	}

	before := map[string]int{}
	for i := 0; i < 15; i++ {
		snap := fmt.Sprintf("s%02d", i)
		before[snap] = hostRecords(t, e)
		e.volume("snapshot", "create", "db", snap)
		time.Sleep(100 * time.Millisecond)
	}
	if got := trim(e.volume("snapshot", "ls", "db", "--format", "{{.Copy}}")); got != strings.TrimSpace(strings.Repeat(copy+"\n", len(before))) {
		t.Errorf("snapshots copied by %q, want %q each", got, copy)
	}
	snapDir := filepath.Join(e.plugin.Root, "volumes", "default", "db", "snapshots")
	for snap, n := range before {
		if out, err := exec.Command("e2fsck", "-fn", filepath.Join(snapDir, snap, "disk.img")).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn of snapshot %s: %v\n%s", snap, err, out)
		}
		clone := "c-" + snap
		e.volume("clone", "db@"+snap, clone)
		img := filepath.Join(e.plugin.Root, "volumes", "default", clone, "disk.img")
		out, err := exec.Command("debugfs", "-R", "cat /log", img).Output()
		if err != nil {
			t.Fatalf("debugfs cat /log of clone %s: %v", clone, err)
		}
		got := checkLog(t, "clone "+clone, string(out))
		if got < n {
			t.Errorf("clone %s holds %d records; %d were written before its snapshot", clone, got, n)
		}
		t.Logf("snapshot %s: %d records, %d written before it", snap, got, n)
		if snap != "s07" {
			// Each clone reserves its size against limits.overcommit,
			// which a small test file system cannot hold fifteen times.
			e.volume("rm", clone)
		}
	}
	reader := e.cr.RunPod("reader", "default", "uid-reader", map[string]string{podKey: "- c-s07:/data"})
	rid := e.cr.RunContainer(reader, "app", appImage, nil, nil)
	if got := checkLog(t, "clone c-s07 in a pod", e.cr.Exec(rid, "cat", "/data/log")); got < before["s07"] {
		t.Errorf("clone c-s07 in a pod holds %d records, want at least %d", got, before["s07"])
	}

	if copy == "reflink" {
		checkCloneOf(t, e, before["s03"])
	}

	// kill -9 while frozen; the running plugin thaws within seconds, the
	// next command at once, and so does a plugin start.
	for _, thaw := range []func(){
		func() {},
		func() { e.volume("ls") },
		func() { e.plugin.Stop(); e.plugin.Start(t) },
	} {
		frozen := killWhileFrozen(t, e)
		t.Logf("killed while frozen at %d records; %d a second later", frozen, waitRecords(t, e, time.Second))
		thaw()
		if !eventually(func() bool { return hostRecords(t, e) > frozen+5 }) {
			t.Fatalf("the writer is still blocked at %d records after the thaw", frozen)
		}
	}
	if res := e.plugin.Volume("snapshot", "ls", "db", "-q"); res.Err != nil || strings.Contains(res.Stdout, "killed") {
		t.Errorf("snapshot ls after the killed ones: %v %q", res.Err, res.Stdout)
	}
}

// killWhileFrozen runs a CLI snapshot that holds the volume db frozen, kills
// it with SIGKILL there, and returns the records written by then.
func killWhileFrozen(t *testing.T, e *env) int {
	t.Helper()
	cmd := exec.Command(e.plugin.Bin, "volume", "snapshot", "create", "db", "killed", "--root", e.plugin.Root)
	cmd.Env = append(os.Environ(), "NRI_VOLUMES_TEST_HOLD_FROZEN=1h")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(e.plugin.Root, "volumes", ".frozen", "default,db")
	ok := eventually(func() bool { _, err := os.Stat(marker); return err == nil })
	n := hostRecords(t, e)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if !ok {
		t.Fatal("the snapshot never froze the volume")
	}
	return n
}

// waitRecords waits d and returns the records written by then.
func waitRecords(t *testing.T, e *env, d time.Duration) int {
	t.Helper()
	time.Sleep(d)
	return hostRecords(t, e)
}

// checkCloneOf runs a pod whose anonymous volume is cloneOf db@s03, which
// holds at least n records: it sees them, writes, and its clone goes with
// it, db and its snapshot untouched.
func checkCloneOf(t *testing.T, e *env, n int) {
	t.Helper()
	pod := e.cr.RunPod("ci", "default", "uid-ci", map[string]string{podKey: "- {target: /fixture, cloneOf: db@s03}"})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	if got := checkLog(t, "cloneOf db@s03 in a pod", e.cr.Exec(id, "cat", "/fixture/log")); got < n {
		t.Errorf("cloneOf db@s03 holds %d records, want at least %d", got, n)
	}
	e.cr.Sh(id, "echo scribble >> /fixture/log && sync")
	anon := e.anonymousVolumes("default")
	if len(anon) != 1 {
		t.Fatalf("anonymous volumes with the cloneOf pod: %v, want 1", anon)
	}
	e.cr.RmPod(pod)
	if !eventually(func() bool { return len(e.anonymousVolumes("default")) == 0 }) {
		t.Errorf("the anonymous clone outlived its pod: %v", e.anonymousVolumes("default"))
	}
	out, err := exec.Command("debugfs", "-R", "cat /log", filepath.Join(e.plugin.Root, "volumes", "default", "db", "snapshots", "s03", "disk.img")).Output()
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, "snapshot s03 after its clone was written", string(out))
}
