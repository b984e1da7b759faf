package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestRegistryBlobsNewBytes: the blobs a registry received between two
// listings of its storage are the new digests and their sizes; a blob it
// held already (a second repository linking it) counts nothing.
func TestRegistryBlobsNewBytes(t *testing.T) {
	storage := t.TempDir()
	reg := &harness.Registry{Storage: storage}
	put := func(hex string, size int) {
		t.Helper()
		dir := filepath.Join(storage, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	empty, err := reg.Blobs()
	if err != nil || len(empty) != 0 {
		t.Fatalf("a registry that stored nothing yet: %v, %v", empty, err)
	}
	put("aa11", 100)
	put("bb22", 50)
	before, err := reg.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	if before["sha256:aa11"] != 100 || before["sha256:bb22"] != 50 || len(before) != 2 {
		t.Fatalf("blobs: %v", before)
	}
	put("cc33", 7)
	put("dd44", 3000)
	// A repository's link file is not a blob.
	link := filepath.Join(storage, "docker", "registry", "v2", "repositories", "r", "_layers", "sha256", "aa11")
	if err := os.MkdirAll(link, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(link, "link"), []byte("sha256:aa11"), 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := reg.Blobs()
	if err != nil {
		t.Fatal(err)
	}
	if n, bytes := newBlobs(before, after); n != 2 || bytes != 3007 {
		t.Errorf("new blobs: %d, %d bytes; want 2, 3007", n, bytes)
	}
	if n, bytes := newBlobs(after, after); n != 0 || bytes != 0 {
		t.Errorf("nothing pushed: %d blobs, %d bytes", n, bytes)
	}
}
