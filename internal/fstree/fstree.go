// Package fstree snapshots directory trees for tests that must prove a
// directory was left unchanged: nothing created, deleted, replaced or written.
// It is test support; it holds no state.
package fstree

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Snapshot records every entry below dir without following symlinks: its type
// and permissions, the content hash of a file, the target of a symlink.
// Entries whose base name is in skip are left out, with what is below them.
func Snapshot(t testing.TB, dir string, skip ...string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && slices.Contains(skip, d.Name()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := info.Mode().String()
		switch {
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:8])
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		tree[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// Same fails the test, naming what, when the snapshots before and after differ.
func Same(t testing.TB, what string, before, after map[string]string) {
	t.Helper()
	if maps.Equal(before, after) {
		return
	}
	for k, v := range before {
		if a, ok := after[k]; !ok {
			t.Errorf("%s: %s was removed", what, k)
		} else if a != v {
			t.Errorf("%s: %s changed from %q to %q", what, k, v, a)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s (%s) appeared", what, k, v)
		}
	}
}
