package ociartifact

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

// pushLyingManifest pushes a's blobs under ref's repository, then at ref a
// manifest that declares its first layer to be size bytes.
func pushLyingManifest(t *testing.T, a *Artifact, ref string, size int64, o RemoteOptions) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.Push(ctx, ref+"-honest", o); err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(a.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	m.Layers[0].Size = size
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := o.remote(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(r, taggable{raw}, opts...); err != nil {
		t.Fatal(err)
	}
}

type taggable struct {
	raw []byte
}

func (t taggable) RawManifest() ([]byte, error) { return t.raw, nil }

// A registry that declares a layer larger than the pull may read, or than
// its tar can compress to, is refused before any layer is downloaded:
// nothing lands in the blob cache.
func TestFetchRefusesOversizedLayers(t *testing.T) {
	host, o, gets := countingRegistry(t)
	a := build(t, newTree(20, 1000))
	pushLyingManifest(t, a, host+"/v/data:big", 100<<30, o)
	dir := filepath.Join(t.TempDir(), "blobs")
	c, err := NewBlobCache(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	o.Cache = c
	base := gets.Load()
	r, err := Fetch(context.Background(), host+"/v/data:big", o)
	if err == nil {
		err = r.WriteTar(io.Discard)
		t.Errorf("Fetch() of a layer declared 100 GiB for a tar of %d bytes: no error", a.Config.Layers[0].TarSize)
	} else if !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), "layer 0") {
		t.Errorf("Fetch() of a layer declared 100 GiB = %v", err)
	}
	// The config is read; no layer.
	if n := gets.Load() - base; n > 1 {
		t.Errorf("%d blobs fetched before the refusal; want only the config", n)
	}
	if names, _ := os.ReadDir(dir); len(names) != 0 {
		t.Errorf("the blob cache holds %d files after a refused pull", len(names))
	}
}

// The pull's own bound refuses an honest artifact whose layers are larger
// than it, before any layer is downloaded.
func TestFetchMaxPullBytes(t *testing.T) {
	host, o, gets := countingRegistry(t)
	a := build(t, newTree(20, 100000))
	if _, err := a.Push(context.Background(), host+"/v/data:1", o); err != nil {
		t.Fatal(err)
	}
	base := gets.Load()
	o.MaxPullBytes = 64 << 10
	if _, err := Fetch(context.Background(), host+"/v/data:1", o); !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), "more than") {
		t.Errorf("Fetch() of %d compressed bytes with MaxPullBytes 64 KiB = %v", a.Config.Bytes, err)
	}
	if n := gets.Load() - base; n > 1 {
		t.Errorf("%d blobs fetched before the refusal; want only the config", n)
	}
	o.MaxPullBytes = 1 << 30
	pullAll(t, host+"/v/data:1", o)
}

// A new cache (a reload that changes its bound) leaves alone the
// temporary files of downloads still running, which hold a lock on them,
// and removes those a dead process left.
func TestBlobCacheKeepsRunningDownloads(t *testing.T) {
	dir := t.TempDir()
	live, err := os.CreateTemp(dir, blobTmpPrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := unix.Flock(int(live.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	dead, err := os.CreateTemp(dir, blobTmpPrefix)
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	if _, err := NewBlobCache(dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(live.Name()); err != nil {
		t.Errorf("a running download's file: %v", err)
	}
	if _, err := os.Stat(dead.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dead download's file is still there: %v", err)
	}
}

// A download under way takes room in the cache's bound: the blobs a pull
// finishes meanwhile are not kept past it.
func TestBlobCacheCountsRunningDownloads(t *testing.T) {
	host, o, _ := countingRegistry(t)
	a := build(t, newTree(20, 1000))
	if _, err := a.Push(context.Background(), host+"/v/data:1", o); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "blobs")
	c, err := NewBlobCache(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	running, err := os.CreateTemp(dir, blobTmpPrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	if err := running.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	o.Cache = c
	pullAll(t, host+"/v/data:1", o)
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Errorf("the cache holds %d files beside a running download that fills its bound; want only that one", len(names)-1)
	}
}
