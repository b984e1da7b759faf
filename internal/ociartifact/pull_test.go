package ociartifact

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testRegistry is go-containerregistry's in-memory registry behind TLS:
// quick, for the round trip of the format; the end-to-end tests use the
// CNCF distribution registry with auth.
func testRegistry(t *testing.T) (host string, o RemoteOptions) {
	srv := httptest.NewTLSServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "https://"), RemoteOptions{CAFile: ca, AuthFile: writeEmptyAuth(t)}
}

func writeEmptyAuth(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(`{"auths":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func entries(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out = append(out, hdr.Name+" "+hdr.ModTime.String()+" "+hdr.PAXRecords["SCHILY.xattr.user.k"]+" "+string(data[:min(len(data), 8)]))
	}
}

func TestPushFetchRoundTrip(t *testing.T) {
	host, o := testRegistry(t)
	tr := newTree(300, 2000)
	want := entries(t, tr.tar(t))
	a := build(t, tr)
	ctx := context.Background()
	stats, err := a.Push(ctx, host+"/v/data:1", o)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Blobs != int64(len(a.Layers))+1 {
		t.Errorf("first push uploaded %d blobs for %d layers", stats.Blobs, len(a.Layers))
	}
	if again, err := a.Push(ctx, host+"/v/data:2", o); err != nil || again.Blobs != 0 || again.Bytes != 0 {
		t.Errorf("second push: %+v, %v; want nothing uploaded", again, err)
	}
	r, err := Fetch(ctx, host+"/v/data:1", o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest != stats.Digest || r.Config.Bytes != 600000 || r.Annotations[AnnotationVolume] != "v" {
		t.Errorf("fetched %s %+v %v", r.Digest, r.Config.Bytes, r.Annotations)
	}
	var buf bytes.Buffer
	if err := r.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	got := entries(t, &buf)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("round trip differs: %d entries, want %d", len(got), len(want))
	}

	// What crane export does (mutate.Extract flattens the layers) reads it
	// as an ordinary image.
	ref, _ := name.ParseReference(host + "/v/data:1")
	opts, err := o.remote(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	flat := mutate.Extract(img)
	if got := entries(t, flat); len(got) != len(want) {
		t.Errorf("flattened as crane export does: %d entries, want %d", len(got), len(want))
	}
	flat.Close()

	// A config that lies about a layer is caught while it streams.
	a.Config.Layers[2].DiffID = "sha256:" + strings.Repeat("1", 64)
	if err := a.Seal(Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, host+"/v/data:bad", o); err != nil {
		t.Fatal(err)
	}
	r, err = Fetch(ctx, host+"/v/data:bad", o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteTar(io.Discard); !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), "layer 2") {
		t.Errorf("WriteTar() of a lying config = %v", err)
	}
	a.Config.Labels = map[string]string{"bad\nkey": "v"}
	if err := a.Seal(Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, host+"/v/data:labels", o); err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(ctx, host+"/v/data:labels", o); !errors.Is(err, ErrArtifact) || !strings.Contains(err.Error(), "label") {
		t.Errorf("Fetch() of an artifact with a bad label = %v", err)
	}
	if _, err := Fetch(ctx, host+"/v/data", o); !errors.Is(err, ErrArtifact) {
		t.Errorf("Fetch() without a tag = %v", err)
	}
}

// Plain HTTP only to a registry the administrator listed as insecure.
func TestPlainHTTPOnlyForInsecureHosts(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	a := build(t, newTree(10, 100))
	ctx := context.Background()
	o := RemoteOptions{AuthFile: writeEmptyAuth(t)}
	if _, err := a.Push(ctx, host+"/v/data:1", o); err == nil || !strings.Contains(err.Error(), "plain HTTP is not used") {
		t.Fatalf("push over plain HTTP to an unlisted host: %v", err)
	}
	o.InsecureHosts = []string{"registry.example:5000", host}
	if _, err := a.Push(ctx, host+"/v/data:1", o); err != nil {
		t.Fatalf("push to a host listed as insecure: %v", err)
	}
	if _, err := Fetch(ctx, host+"/v/data:1", o); err != nil {
		t.Fatalf("fetch from a host listed as insecure: %v", err)
	}
}
