package ociartifact

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// countingRegistry is testRegistry counting the blob GETs it answers.
func countingRegistry(t *testing.T) (host string, o RemoteOptions, gets *atomic.Int64) {
	gets = &atomic.Int64{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			gets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "https://"), RemoteOptions{CAFile: ca, AuthFile: writeEmptyAuth(t)}, gets
}

func pullAll(t *testing.T, ref string, o RemoteOptions) []byte {
	t.Helper()
	r, err := Fetch(context.Background(), ref, o)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := r.WriteTar(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// Pulls through one cache download each blob once, however many run at
// once; a cached blob that does not match its digest fails the read and
// is removed; the cache keeps to its bound.
func TestBlobCache(t *testing.T) {
	host, o, gets := countingRegistry(t)
	a := build(t, newTree(300, 2000))
	if _, err := a.Push(context.Background(), host+"/v/data:1", o); err != nil {
		t.Fatal(err)
	}
	layers := int64(len(a.Layers))
	if layers < 2 {
		t.Fatalf("want an artifact of several layers, got %d", layers)
	}
	want := pullAll(t, host+"/v/data:1", o)
	base := gets.Load()

	dir := filepath.Join(t.TempDir(), "blobs")
	c, err := NewBlobCache(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	o.Cache = c
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := pullAll(t, host+"/v/data:1", o); !bytes.Equal(got, want) {
				t.Error("a pull through the cache read other data")
			}
		}()
	}
	wg.Wait()
	// Each pull reads its config blob; the layers once in all.
	if n := gets.Load() - base; n != layers+8 {
		t.Errorf("8 pulls at once fetched %d blobs of %d layers and the config; want each layer once", n, layers)
	}
	if c.Downloads.Load() != layers || c.Hits.Load() != 7*layers {
		t.Errorf("downloads %d, hits %d; want %d and %d", c.Downloads.Load(), c.Hits.Load(), layers, 7*layers)
	}

	// A cached blob changed on disk.
	victim := filepath.Join(dir, strings.Replace(a.Layers[0].Digest, ":", "-", 1))
	if err := os.WriteFile(victim, []byte("not the blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := pullAll(t, host+"/v/data:1", o); !bytes.Equal(got, want) {
		t.Error("a pull read a corrupt cached blob")
	}
	if c.Downloads.Load() != layers+1 {
		t.Errorf("downloads %d after a corrupt blob; want it fetched again, %d in all", c.Downloads.Load(), layers+1)
	}

	// Bounded: a cache of one byte keeps nothing past a pull, and still
	// serves it.
	small, err := NewBlobCache(filepath.Join(t.TempDir(), "small"), 1)
	if err != nil {
		t.Fatal(err)
	}
	o.Cache = small
	if got := pullAll(t, host+"/v/data:1", o); !bytes.Equal(got, want) {
		t.Error("a pull through a full cache read other data")
	}
	if names, _ := os.ReadDir(small.Dir()); len(names) > 1 {
		t.Errorf("a cache bounded to 1 byte keeps %d blobs", len(names))
	}
}
