package e2e

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// tarFile returns the content of the regular file name in the tar at path.
func tarFile(t *testing.T, path, name string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s: no %s", path, name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

// TestExportWhileContainerWrites: volume export of a sized volume that a
// container appends fsynced records to reads a temporary snapshot: each tar
// holds every record written before it began and no torn one, and the
// snapshot is gone afterwards.
func TestExportWhileContainerWrites(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("db", "default", "uid-db", map[string]string{podKey: "- {source: db, target: /data, size: 64Mi}"})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(id, writerScript)
	if !eventually(func() bool { return hostRecords(t, e) > 10 }) {
		t.Fatal("the writer wrote nothing")
	}
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		before := hostRecords(t, e)
		out := filepath.Join(dir, "db.tar")
		e.volume("export", "-o", out, "db")
		if got := checkLog(t, "export", tarFile(t, out, "log")); got < before {
			t.Errorf("export %d holds %d records; %d were written before it", i, got, before)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(e.plugin.Root, "volumes", "default", "db", "snapshots")); len(entries) != 0 {
		t.Errorf("the exports left %d entries in the snapshots directory", len(entries))
	}
	if got := trim(e.volume("snapshot", "ls", "db", "-q")); got != "" {
		t.Errorf("snapshots after the exports: %q", got)
	}
}

// TestCloneOfPlainInPod: pods with cloneOf of a plain volume, and of a
// snapshot of it, see its data, copied by the copy-up hook before they
// start; they write without changing the source, and the anonymous clone
// goes with its pod.
func TestCloneOfPlainInPod(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.volume("create", "golden")
	golden := e.plugin.VolumeDir("default", "golden")
	if err := os.MkdirAll(filepath.Join(golden, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(golden, "dir", "fixture"), []byte("v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.volume("snapshot", "create", "golden", "v1")
	if err := os.WriteFile(filepath.Join(golden, "dir", "fixture"), []byte("now\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := e.cr.RunPod("ci", "default", "uid-ci", map[string]string{podKey: "- {target: /fixture, cloneOf: golden}\n- {source: ci-v1, target: /v1, cloneOf: golden@v1}"})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	if got := e.cr.Exec(id, "cat", "/fixture/dir/fixture", "/v1/dir/fixture"); got != "now\nv1\n" {
		t.Errorf("the pod's clones hold %q, want now and v1", got)
	}
	e.cr.Sh(id, "echo scribble > /fixture/dir/fixture && echo scribble > /v1/dir/fixture && sync")
	if got := trim(e.volume("inspect", "--format", "{{.ClonePending}}", "ci-v1")); got != "" {
		t.Errorf("ci-v1 still to be copied after its container started: %q", got)
	}
	if len(e.anonymousVolumes("default")) != 1 {
		t.Fatalf("anonymous volumes with the cloneOf pod: %v, want 1", e.anonymousVolumes("default"))
	}
	e.cr.RmPod(pod)
	if !eventually(func() bool { return len(e.anonymousVolumes("default")) == 0 }) {
		t.Errorf("the anonymous clone outlived its pod: %v", e.anonymousVolumes("default"))
	}
	if b, _ := os.ReadFile(filepath.Join(golden, "dir", "fixture")); string(b) != "now\n" {
		t.Errorf("the pod's writes changed golden: %q", b)
	}
	if !strings.Contains(e.volume("snapshot", "ls", "golden"), "v1") {
		t.Error("golden's snapshot v1 is gone")
	}
}

// TestCloneOfSizedInPod: on the host's store (ext4 here, no reflinks), a
// pod's volume cloneOf a snapshot of a sized volume is made as a new sized
// volume of the golden's size and filled by the copy-up hook before the
// container starts: the pod sees the snapshot's data, its writes leave
// golden as it is, and its anonymous clone goes with it.
func TestCloneOfSizedInPod(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("db", "default", "uid-db", map[string]string{podKey: "- {source: golden, target: /data, size: 32Mi}"})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(id, "mkdir -p /data/dir && echo v1 > /data/dir/fixture && sync")
	e.volume("snapshot", "create", "golden", "s1")
	e.cr.Sh(id, "echo now > /data/dir/fixture && sync")

	ci := e.cr.RunPod("ci", "default", "uid-ci", map[string]string{podKey: "- {target: /fixture, cloneOf: golden@s1}\n- {source: ci-s1, target: /s1, cloneOf: golden@s1}"})
	cid := e.cr.RunContainer(ci, "app", appImage, nil, nil)
	if got := e.cr.Exec(cid, "cat", "/fixture/dir/fixture", "/s1/dir/fixture"); got != "v1\nv1\n" {
		t.Errorf("the pod's clones hold %q, want v1 twice", got)
	}
	if got := trim(e.volume("inspect", "--format", "{{.ClonePending}}/{{.Limit}}", "ci-s1")); got != "/33554432" {
		t.Errorf("ci-s1 after its container started: ClonePending and size %q, want none and 32 MiB", got)
	}
	e.cr.Sh(cid, "echo scribble > /fixture/dir/fixture && echo scribble > /s1/dir/fixture && sync")
	e.cr.RmPod(ci)
	if !eventually(func() bool { return len(e.anonymousVolumes("default")) == 0 }) {
		t.Errorf("the anonymous clone outlived its pod: %v", e.anonymousVolumes("default"))
	}
	if got := e.cr.Exec(id, "cat", "/data/dir/fixture"); got != "now\n" {
		t.Errorf("the clones' writes changed golden: %q", got)
	}
	out, err := exec.Command("debugfs", "-R", "cat /dir/fixture", filepath.Join(e.plugin.Root, "volumes", "default", "golden", "snapshots", "s1", "disk.img")).Output()
	if err != nil || string(out) != "v1\n" {
		t.Errorf("golden's snapshot s1 holds %q, %v; want v1", out, err)
	}
}
