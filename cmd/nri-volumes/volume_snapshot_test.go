package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVolumeSnapshotCloneRestore walks the snapshot commands as a person
// would: take, list, clone, restore, remove, and the mistakes.
func TestVolumeSnapshotCloneRestore(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "web")
	data := filepath.Join(root, "volumes", "default", "web", "_data")
	if err := os.WriteFile(filepath.Join(data, "index.html"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := mustCLI(t, root, "snapshot", "create", "web")
	if stamp := strings.TrimSpace(r.stdout); len(stamp) != len("20261206T205800Z") || !strings.HasSuffix(stamp, "Z") {
		t.Errorf("default snapshot name %q, want a UTC time stamp", stamp)
	}
	mustCLI(t, root, "snapshot", "create", "web", "v1")
	r = mustCLI(t, root, "snapshot", "ls")
	if len(r.stdoutLines) != 3 || strings.Join(strings.Fields(r.stdoutLines[0]), " ") != "NAME VOLUME CREATED SIZE" {
		t.Errorf("snapshot ls:\n%s", r.stdout)
	}
	r = mustCLI(t, root, "snapshot", "ls", "web", "--format", "json")
	var sn map[string]any
	if err := json.Unmarshal([]byte(r.stdoutLines[1]), &sn); err != nil || sn["Name"] != "v1" || sn["Volume"] != "web" {
		t.Errorf("snapshot ls --format json: %q (%v)", r.stdout, err)
	}

	if r := mustCLI(t, root, "clone", "web@v1", "web-copy", "--label", "env=test"); r.stdout != "web-copy\n" {
		t.Errorf("clone printed %q", r.stdout)
	}
	if b, err := os.ReadFile(filepath.Join(root, "volumes", "default", "web-copy", "_data", "index.html")); err != nil || string(b) != "v1" {
		t.Errorf("clone holds %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(data, "index.html"), []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, root, "restore", "web", "v1")
	if b, _ := os.ReadFile(filepath.Join(data, "index.html")); string(b) != "v1" {
		t.Errorf("after restore: %q, want v1", b)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"clone", "web@v1", "web-copy"}, `volume "web-copy" in namespace "default": already exists`},
		{[]string{"clone", "web@nope", "other"}, `snapshot "nope": not found`},
		{[]string{"restore", "web", "nope"}, `snapshot "nope": not found`},
		{[]string{"snapshot", "rm", "web", "nope"}, `snapshot "nope": not found`},
		{[]string{"clone", "-o", "size=1Gi", "web", "sized"}, `a volume without a size, cannot be given one`},
		{[]string{"clone", "-o", "uid=1", "web", "owned"}, `only -o size=SIZE`},
	} {
		r := runCLI(t, root, "", tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("volume %s: exit %d, stderr %q; want 1 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "volumes", "default", "other")); !os.IsNotExist(err) {
		t.Errorf("a failed clone left a volume: %v", err)
	}

	if r := mustCLI(t, root, "snapshot", "rm", "web", "v1"); r.stdout != "v1\n" {
		t.Errorf("snapshot rm printed %q", r.stdout)
	}
	r = mustCLI(t, root, "rm", "web")
	if r.stdout != "web\n" || !strings.Contains(r.stderr, "removed its 1 snapshot(s)") {
		t.Errorf("rm: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// TestVolumeRenameAndLabels renames a volume and changes its labels.
func TestVolumeRenameAndLabels(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "a", "--label", "x=1")
	mustCLI(t, root, "create", "b")
	if r := runCLI(t, root, "", "rename", "a", "b"); r.code != 1 || !strings.Contains(r.stderr, `volume "b" in namespace "default": already exists`) {
		t.Errorf("rename onto b: %+v", r)
	}
	if r := mustCLI(t, root, "rename", "a", "c"); r.stdout != "c\n" {
		t.Errorf("rename printed %q", r.stdout)
	}
	mustCLI(t, root, "update", "--label-add", "y=2", "--label-rm", "x", "c")
	r := mustCLI(t, root, "inspect", "c", "--format", "{{json .Labels}}")
	if strings.TrimSpace(r.stdout) != `{"y":"2"}` {
		t.Errorf("labels after update: %s", r.stdout)
	}
	if r := runCLI(t, root, "", "update", "c"); r.code != 2 {
		t.Errorf("update without a change: %+v", r)
	}
}
