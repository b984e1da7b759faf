package plugin_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/ociartifact"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// seedRegistry is go-containerregistry's in-memory registry behind TLS,
// and the CA file that trusts it.
func seedRegistry(t testing.TB) (host, ca string, blobGets *atomic.Int64) {
	return slowRegistry(t, 0)
}

// slowRegistry is seedRegistry taking delay to answer each blob GET.
func slowRegistry(t testing.TB, delay time.Duration) (host, ca string, blobGets *atomic.Int64) {
	blobGets = &atomic.Int64{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			blobGets.Add(1)
			time.Sleep(delay)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ca = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "https://"), ca, blobGets
}

type tarEntry struct {
	name, body string
	typ        byte
}

func tarOf(t *testing.T, entries ...tarEntry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), ModTime: time.Unix(1e9, 0)}
		if e.typ == tar.TypeDir {
			hdr.Mode, hdr.Size = 0o755, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// createRetried creates the container, as kubelet does again while the
// plugin says its volumes are still being pulled (ErrBusy).
func createRetried(t testing.TB, rt *runtime, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, error) {
	t.Helper()
	for i := 0; ; i++ {
		adj, err := rt.create(pod, ctr)
		if err == nil || !strings.Contains(err.Error(), "still pulling") || i == 200 {
			return adj, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A reference outside the namespace's registries.allow is refused before
// anything reaches the network: the allowed reference to the same closed
// port fails otherwise, with the pull's own error; nothing is left.
func TestSeedPolicyRefusesBeforeNetwork(t *testing.T) {
	rt := newRuntime(t, func(c *config.Config) {
		c.Registries.Allow = []config.PullRule{{Namespaces: []string{"shop", "ci-*"}, Refs: []string{"127.0.0.1:1/shop/*"}}}
	})
	rt.connect()
	key := plugin.VolumesKey + "/pod"
	for _, c := range []struct{ ns, ann, want string }{
		{"shop", "- /scratch\n- {source: pg, target: /data, from: \"127.0.0.1:1/other/pg:1\"}",
			`volumes.noderesource.dev/pod: item 2 (target "/data"): from "127.0.0.1:1/other/pg:1": not allowed for namespace "shop" by registries.allow`},
		{"default", "- {target: /data, from: \"127.0.0.1:1/shop/pg:1\"}", `not allowed for namespace "default" by registries.allow`},
		{"ci-7", "- {target: /data, from: \"127.0.0.1:1/shop/pg:1\", fromPath: /var/lib/pg}", `from "127.0.0.1:1/shop/pg:1": pulling`},
	} {
		_, err := createRetried(t, rt, newPod("p-"+c.ns, c.ns, map[string]string{key: c.ann}), newContainer("c-"+c.ns, "p-"+c.ns, "db"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("namespace %s, %q: %v; want an error with %q", c.ns, c.ann, err, c.want)
		}
		if c.ns != "ci-7" && strings.Contains(err.Error(), "connect") {
			t.Errorf("the refusal reached the network: %v", err)
		}
	}
	if vols, err := rt.store().List(volumes.ListOptions{AllNamespaces: true}); err != nil || len(vols) != 0 {
		t.Fatalf("volumes left behind: %+v, %v", vols, err)
	}
	for _, bad := range []struct{ ann, want string }{
		{"- {target: /d, fromPath: /x}", "fromPath \"/x\" needs from"},
		{"- {target: /d, from: \"r.local/x:1\", fromPath: x}", "want an absolute path"},
		{"- {target: /d, from: \"r.local/x:1\", cloneOf: v}", "not both"},
		{"- {type: tmpfs, target: /d, from: \"r.local/x:1\"}", "from"},
		{"- {type: bind, source: /srv, target: /d, from: \"r.local/x:1\"}", "from is only for volumes"},
		{"- {target: /d, from: \"UPPER/x:1\"}", "want HOST/REPOSITORY"},
	} {
		if _, err := plugin.ParseVolumes(key, bad.ann, rt.cfg.Tmpfs); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseVolumes(%q) = %v, want an error with %q", bad.ann, err, bad.want)
		}
	}
}

// from: an artifact that volume push wrote makes the volume from it; from:
// an ordinary image with fromPath makes it from that directory, the layers
// flattened and whiteouts applied; a wrong reference fails the container
// with a message naming it and leaves no volume.
func TestSeedFromRegistry(t *testing.T) {
	host, ca, blobGets := seedRegistry(t)
	rt := newRuntime(t, func(c *config.Config) {
		c.Registries.CAFile = ca
		c.Registries.Allow = []config.PullRule{{Namespaces: []string{"shop"}, Refs: []string{host + "/shop/*"}}}
	})
	rt.connect()
	ctx := context.Background()
	ro := ociartifact.RemoteOptions{CAFile: ca}

	art, err := ociartifact.Build(bytes.NewReader(tarOf(t,
		tarEntry{name: "db/", typ: tar.TypeDir}, tarEntry{name: "db/table", body: "rows", typ: tar.TypeReg})),
		t.TempDir(), ociartifact.Meta{Volume: "pg", Namespace: "a", Labels: map[string]string{"app": "pg"}}, ociartifact.SplitFor(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := art.Push(ctx, host+"/shop/pg:1", ro); err != nil {
		t.Fatal(err)
	}
	lower, err := tarball.LayerFromOpener(opener(tarOf(t, tarEntry{name: "var/", typ: tar.TypeDir}, tarEntry{name: "var/lib/", typ: tar.TypeDir},
		tarEntry{name: "var/lib/pg/", typ: tar.TypeDir}, tarEntry{name: "var/lib/pg/keep", body: "kept", typ: tar.TypeReg},
		tarEntry{name: "var/lib/pg/gone", body: "whited out", typ: tar.TypeReg}, tarEntry{name: "etc/", typ: tar.TypeDir},
		tarEntry{name: "etc/passwd", body: "root", typ: tar.TypeReg})))
	if err != nil {
		t.Fatal(err)
	}
	upper, err := tarball.LayerFromOpener(opener(tarOf(t, tarEntry{name: "var/lib/pg/.wh.gone", typ: tar.TypeReg},
		tarEntry{name: "var/lib/pg/new", body: "upper", typ: tar.TypeReg})))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	imgRef, err := name.ParseReference(host + "/shop/postgres:16")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(imgRef, img, remote.WithTransport(transportTrusting(t, ca))); err != nil {
		t.Fatal(err)
	}

	key := plugin.VolumesKey + "/pod"
	ann := map[string]string{key: "- {source: pg, target: /data, from: \"" + host + "/shop/pg:1\"}\n" +
		"- {target: /pgdata, from: \"" + host + "/shop/postgres:16\", fromPath: /var/lib/pg}"}
	adj, err := createRetried(t, rt, newPod("p1", "shop", ann), newContainer("c1", "p1", "db"))
	if err != nil {
		t.Fatalf("CreateContainer() with from: %v", err)
	}
	data := findMount(adj, "/data").GetSource()
	if b, err := os.ReadFile(filepath.Join(data, "db", "table")); err != nil || string(b) != "rows" {
		t.Errorf("seeded named volume: %q, %v", b, err)
	}
	pgdata := findMount(adj, "/pgdata").GetSource()
	got := map[string]string{}
	filepath.WalkDir(pgdata, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			got[strings.TrimPrefix(p, pgdata+"/")] = string(b)
		}
		return nil
	})
	if len(got) != 2 || got["keep"] != "kept" || got["new"] != "upper" {
		t.Errorf("volume from the image's /var/lib/pg holds %v, want keep and new, without gone", got)
	}
	if v, err := rt.store().Get("shop", "pg"); err != nil || v.Labels["app"] != "pg" {
		t.Errorf("seeded volume: %+v, %v", v, err)
	}
	// Seeded once: a second container takes the volume as it is.
	if err := os.WriteFile(filepath.Join(data, "mine"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.create(newPod("p2", "shop", ann), newContainer("c2", "p2", "db")); err != nil {
		t.Fatalf("second container: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "mine")); err != nil {
		t.Errorf("the second container's from: pulled again over the volume: %v", err)
	}

	// Anonymous volumes of five more pods from the same artifact: each
	// pull reads the artifact's config, its layers come from the node's
	// blob cache.
	before := blobGets.Load()
	anon := map[string]string{key: "- {target: /data, from: \"" + host + "/shop/pg:1\"}"}
	for i := range 5 {
		id := fmt.Sprintf("anon%d", i)
		adj, err := createRetried(t, rt, newPod(id, "shop", anon), newContainer("c-"+id, id, "db"))
		if err != nil {
			t.Fatalf("pod %s: %v", id, err)
		}
		if b, err := os.ReadFile(filepath.Join(findMount(adj, "/data").GetSource(), "db", "table")); err != nil || string(b) != "rows" {
			t.Errorf("pod %s's anonymous volume: %q, %v", id, b, err)
		}
	}
	if n := blobGets.Load() - before; n != 5 {
		t.Errorf("5 pulls of a 1-layer artifact fetched %d blobs; want 5 configs and no layer", n)
	}
	if blobs, err := os.ReadDir(filepath.Join(rt.cfg.Root, "blobs")); err != nil || len(blobs) == 0 {
		t.Errorf("blob cache: %v, %v", blobs, err)
	}

	bad := map[string]string{key: "- {source: nothere, target: /data, from: \"" + host + "/shop/missing:1\"}"}
	_, err = createRetried(t, rt, newPod("p3", "shop", bad), newContainer("c3", "p3", "db"))
	if err == nil || !strings.Contains(err.Error(), `from "`+host+`/shop/missing:1"`) || !strings.Contains(err.Error(), "NAME_UNKNOWN") {
		t.Errorf("from a missing reference: %v", err)
	}
	if _, err := rt.store().Get("shop", "nothere"); !errors.Is(err, volumes.ErrNotFound) {
		t.Errorf("a failed pull left a volume: %v", err)
	}
}

func opener(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// transportTrusting is an HTTP transport that trusts the CA in the PEM
// file ca.
func transportTrusting(t *testing.T, ca string) http.RoundTripper {
	b, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr
}

// pushArtifact pushes an artifact of one file, db/table, to ref.
func pushArtifact(t *testing.T, ref, ca string) {
	t.Helper()
	art, err := ociartifact.Build(bytes.NewReader(tarOf(t,
		tarEntry{name: "db/", typ: tar.TypeDir}, tarEntry{name: "db/table", body: "rows", typ: tar.TypeReg})),
		t.TempDir(), ociartifact.Meta{Volume: "pg", Namespace: "a"}, ociartifact.SplitFor(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := art.Push(context.Background(), ref, ociartifact.RemoteOptions{CAFile: ca}); err != nil {
		t.Fatal(err)
	}
}

// A pull that a dead plugin left part-way is started over by the next
// container that asks for the volume; one that the bytes limit refuses
// fails the container with the key and leaves no volume.
func TestSeedResumedAndBounded(t *testing.T) {
	host, ca, _ := seedRegistry(t)
	rt := newRuntime(t, func(c *config.Config) {
		c.Registries.CAFile = ca
		c.Registries.MaxPullBytes = 3
		c.Registries.Allow = []config.PullRule{{Namespaces: []string{"shop"}, Refs: []string{host + "/shop/*"}}}
	})
	rt.connect()
	pushArtifact(t, host+"/shop/pg:1", ca)
	key := plugin.VolumesKey + "/pod"

	ann := map[string]string{key: "- {source: pg, target: /data, from: \"" + host + "/shop/pg:1\"}"}
	_, err := createRetried(t, rt, newPod("p1", "shop", ann), newContainer("c1", "p1", "db"))
	if err == nil || !strings.Contains(err.Error(), "registries.maxPullBytes") || !strings.Contains(err.Error(), `from "`+host+`/shop/pg:1"`) {
		t.Fatalf("a pull above registries.maxPullBytes: %v", err)
	}
	if _, err := rt.store().Get("shop", "pg"); !errors.Is(err, volumes.ErrNotFound) {
		t.Fatalf("the refused pull left a volume: %v", err)
	}

	// A pull of a plugin that died: the volume is there, held, part-filled.
	left, err := rt.store().Seeds().Create(volumes.Request{Namespace: "shop", Name: "pg2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(left.Mountpoint, "partial"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := map[string]string{key: "- pg2:/data"}
	if _, err := rt.create(newPod("p2", "shop", plain), newContainer("c2", "p2", "db")); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("a container without from: took a half-seeded volume: %v", err)
	}
	// The plugin holds this configuration; no request runs meanwhile.
	rt.cfg.Registries.MaxPullBytes = 0
	ann2 := map[string]string{key: "- {source: pg2, target: /data, from: \"" + host + "/shop/pg:1\"}"}
	adj, err := createRetried(t, rt, newPod("p3", "shop", ann2), newContainer("c3", "p3", "db"))
	if err != nil {
		t.Fatalf("from: over a half-seeded volume: %v", err)
	}
	data := findMount(adj, "/data").GetSource()
	if _, err := os.Stat(filepath.Join(data, "partial")); !os.IsNotExist(err) {
		t.Errorf("the half pull's file stays: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "db", "table")); err != nil || string(b) != "rows" {
		t.Errorf("re-seeded volume: %q, %v", b, err)
	}

	// The pod's copy-up budget counts pulls: pod p3 wrote 4 bytes.
	rt.cfg.Limits.CopyUpMaxSizePerPod = 6
	ann3 := map[string]string{key: "- {source: pg3, target: /data, from: \"" + host + "/shop/pg:1\"}"}
	_, err = createRetried(t, rt, newPod("p3", "shop", ann3), newContainer("c4", "p3", "db"))
	if err == nil || !strings.Contains(err.Error(), "more than") || !strings.Contains(err.Error(), "limits.copyUpMaxSizePerPod") {
		t.Errorf("a pull past the pod's copy-up budget: %v", err)
	}
	if _, err := rt.store().Get("shop", "pg3"); !errors.Is(err, volumes.ErrNotFound) {
		t.Errorf("the refused pull left a volume: %v", err)
	}
}

// A sized volume is seeded too: its image is made outside the request,
// filled, and mounted for the container at its size.
func TestSeedSizedVolume(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	host, ca, _ := seedRegistry(t)
	rt := newRuntime(t, func(c *config.Config) {
		c.Sizes = config.Sizes{Backend: "image", MaxSize: 64 << 20}
		c.Registries.CAFile = ca
		c.Registries.Allow = []config.PullRule{{Namespaces: []string{"shop"}, Refs: []string{host + "/shop/*"}}}
	})
	rt.connect()
	t.Cleanup(func() { fsx.UnmountUnder(rt.cfg.Root) })
	pushArtifact(t, host+"/shop/pg:1", ca)
	ann := map[string]string{plugin.VolumesKey + "/pod": "- {source: pg, target: /data, size: 16Mi, from: \"" + host + "/shop/pg:1\"}\n" +
		"- {target: /anon, size: 16Mi, from: \"" + host + "/shop/pg:1\"}"}
	adj, err := createRetried(t, rt, newPod("p1", "shop", ann), newContainer("c1", "p1", "db"))
	if err != nil {
		t.Fatalf("CreateContainer() with a sized from: %v", err)
	}
	for _, dst := range []string{"/data", "/anon"} {
		src := findMount(adj, dst).GetSource()
		var st syscall.Statfs_t
		if err := syscall.Statfs(src, &st); err != nil {
			t.Fatal(err)
		}
		if size := int64(st.Blocks) * st.Bsize; size > 16<<20 || size < 8<<20 {
			t.Errorf("%s: a file system of %d bytes, want about 16Mi", dst, size)
		}
		if b, err := os.ReadFile(filepath.Join(src, "db", "table")); err != nil || string(b) != "rows" {
			t.Errorf("%s: seeded sized volume: %q, %v", dst, b, err)
		}
	}
}

// A pull slower than the request's wait fails the creation with ErrBusy,
// naming the item and the reference, and goes on: the retry finds the
// volume seeded. Meanwhile no container takes the volume.
func TestSeedSlowPullRetried(t *testing.T) {
	slowHost, slowCA, _ := slowRegistry(t, time.Second)
	pushArtifact(t, slowHost+"/shop/pg:1", slowCA)
	rt := newRuntime(t, func(c *config.Config) {
		c.Registries.CAFile = slowCA
		c.Registries.Allow = []config.PullRule{{Namespaces: []string{"shop"}, Refs: []string{slowHost + "/shop/*"}}}
	})
	rt.connect()
	key := plugin.VolumesKey + "/pod"
	ann := map[string]string{key: "- {source: pg, target: /data, from: \"" + slowHost + "/shop/pg:1\"}"}
	_, err := rt.create(newPod("p1", "shop", ann), newContainer("c1", "p1", "db"))
	for _, want := range []string{key, `item 1 (target "/data")`, `from "` + slowHost + `/shop/pg:1"`, "still pulling", "retry"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("CreateContainer() during a slow pull: %v; want an error with %q", err, want)
		}
	}
	plain := map[string]string{key: "- pg:/data"}
	if _, err := rt.create(newPod("p2", "shop", plain), newContainer("c2", "p2", "db")); err == nil || !strings.Contains(err.Error(), "is being pulled from") {
		t.Errorf("a container without from: while the volume is being pulled: %v", err)
	}
	adj, err := createRetried(t, rt, newPod("p1", "shop", ann), newContainer("c1", "p1", "db"))
	if err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(findMount(adj, "/data").GetSource(), "db", "table")); err != nil || string(b) != "rows" {
		t.Errorf("seeded volume after the retry: %q, %v", b, err)
	}
}
