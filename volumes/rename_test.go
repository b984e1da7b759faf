package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRename: a volume keeps its data, labels and snapshots under its new
// name; in use, anonymous, or onto a taken name it is refused, naming it.
func TestRename(t *testing.T) {
	s, _ := newStore(t)
	v, err := s.Create("default", "old", CreateOptions{Labels: map[string]string{"app": "db"}})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v.Mountpoint, "f"), "data")
	if _, err := s.Snapshots().Create("default", "old", "s1", SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("default", "taken", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rename("default", "old", "taken"); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), `"taken"`) {
		t.Errorf("rename onto a taken name: %v", err)
	}
	if _, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "old"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rename("default", "old", "new"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "ctr") {
		t.Errorf("rename in use: %v", err)
	}
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	owner := &Owner{PodSandboxID: "pod", Container: "c", Target: "/d"}
	anon, _, err := s.Acquire("ctr2", []Request{{Namespace: "default", Owner: owner}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release("ctr2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rename("default", anon[0].Name, "mine"); !errors.Is(err, ErrInvalid) {
		t.Errorf("rename of an anonymous volume: %v", err)
	}

	nv, err := s.Rename("default", "old", "new")
	if err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, s.root)
	got, err := s2.Get("default", "new")
	if err != nil || got.Labels["app"] != "db" || got.Mountpoint != nv.Mountpoint {
		t.Fatalf("after rename: %+v, %v", got, err)
	}
	if b, err := os.ReadFile(filepath.Join(got.Mountpoint, "f")); err != nil || string(b) != "data" {
		t.Errorf("data after rename: %q, %v", b, err)
	}
	if list, err := s2.Snapshots().List("default", "new"); err != nil || len(list) != 1 || list[0].Volume != "new" {
		t.Errorf("snapshots after rename: %v, %v", list, err)
	}
	if _, err := s2.Get("default", "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old name after rename: %v", err)
	}
}

// TestRenameSized: a sized volume left mounted is taken down first, and its
// file system comes back under the new name with its data.
func TestRenameSized(t *testing.T) {
	requireLoop(t)
	s := openSizedAt(t, t.TempDir())
	if _, err := s.Create("default", "db", CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, _, err := s.Acquire("ctr", []Request{{Namespace: "default", Name: "db"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vols[0].Mountpoint, "f"), "sized")
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rename("default", "db", "db2"); err != nil {
		t.Fatal(err)
	}
	vols, _, err = s.Acquire("ctr", []Request{{Namespace: "default", Name: "db2"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(vols[0].Mountpoint, "f")); err != nil || string(b) != "sized" {
		t.Errorf("data after rename: %q, %v", b, err)
	}
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	if probs, err := s.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check: %v, %v", probs, err)
	}
}

// TestUpdateLabels adds, replaces and removes labels, durably.
func TestUpdateLabels(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Create("default", "v", CreateOptions{Labels: map[string]string{"a": "1", "b": "2"}}); err != nil {
		t.Fatal(err)
	}
	// A field of a newer version survives the update.
	meta := filepath.Join(s.dir, "default", "v", metaFile)
	b, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, meta, strings.Replace(string(b), "{", `{"Future": 7,`, 1))
	if _, err := s.UpdateLabels("default", "v", map[string]string{"a": "x"}, []string{"a"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a label both added and removed: %v", err)
	}
	if _, err := s.UpdateLabels("default", "v", map[string]string{"a": "9", "c": "3"}, []string{"b", "nope"}); err != nil {
		t.Fatal(err)
	}
	got, err := openStore(t, s.root).Get("default", "v")
	if err != nil || len(got.Labels) != 2 || got.Labels["a"] != "9" || got.Labels["c"] != "3" {
		t.Errorf("labels after update: %v, %v", got.Labels, err)
	}
	if b, _ := os.ReadFile(meta); !strings.Contains(string(b), `"Future": 7`) {
		t.Errorf("the update dropped a field it does not know:\n%s", b)
	}
	if _, err := s.UpdateLabels("default", "nope", nil, []string{"a"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of a missing volume: %v", err)
	}
}

// TestRenameIsCounted: the namespace counts the metrics read follow a
// rename, so removing the volume by its new name uncounts it.
func TestRenameIsCounted(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Create("default", "web", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stats().Namespaces(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rename("default", "web", "web2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("default", "web2"); err != nil {
		t.Fatal(err)
	}
	c, err := s.Stats().Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := c["default"]; ok {
		t.Errorf("counts after the renamed volume's removal: %+v, want none", n)
	}
}
