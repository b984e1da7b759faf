package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/internal/ociartifact"
	"github.com/nri-volumes/nri-volumes/test/harness"
)

// seedConfig lets namespace shop seed volumes from the registry's shop/
// repositories, with the registry's credentials and CA.
func seedConfig(reg *harness.Registry) harness.PluginConfig {
	return harness.PluginConfig{Extra: harness.RegistriesYAML(reg.AuthFile, reg.CAFile, "shop", reg.Host+"/shop/*")}
}

// createSeeded creates a container as kubelet does: again while the plugin
// says the pull of its volumes goes on.
func createSeeded(t *testing.T, e *env, pod *harness.Pod, name string) (string, error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		id, err := e.cr.CreateContainer(pod, name, appImage, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "still pulling") || time.Now().After(deadline) {
			return id, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSeedFromRegistry: node A pushes a volume; on node B, a pod with
// from: starts with A's data (owners, modes, xattrs, links, times); a pod
// with from: an ordinary image and fromPath gets that directory, whiteouts
// applied; a reference outside the namespace's patterns is refused before
// any network access; a failed pull (a wrong reference, a hostile
// artifact, one larger than the volume's size) fails the container, naming
// the reference, and leaves no volume.
func TestSeedFromRegistry(t *testing.T) {
	reg := harness.StartRegistry(t)
	e := newEnv(t, harness.ContainerdOptions{}, seedConfig(reg))
	a := newNode(t, e.bins.NRIVolumes, reg)
	a.must("create", "pgdata")
	fillVolume(t, a.data("pgdata"), 10, 100)
	ref := reg.Host + "/shop/pgdata:1"
	a.must("push", "pgdata", ref)

	pod := e.cr.RunPod("db", "shop", "uid-db", map[string]string{podKey: "- {source: pgdata, target: /data, from: \"" + ref + "\", external: true}"})
	ctr, err := createSeeded(t, e, pod, "db")
	if err != nil {
		t.Fatalf("container with from: %v", err)
	}
	e.cr.Start(ctr)
	fstree.Same(t, "volume seeded on node B", fullTree(t, a.data("pgdata")), fullTree(t, e.plugin.VolumeDir("shop", "pgdata")))
	if got := trim(e.cr.Sh(ctr, "stat -c '%u:%g %a' /data/db/table; cat /data/hard")); got != "1000:1001 750\nrows" {
		t.Errorf("seeded volume in the pod: %q", got)
	}

	// An ordinary image: /var/lib/pg of its lower layer, less what the upper
	// one whites out, plus what it adds.
	imgRef := reg.Host + "/shop/postgres:16"
	pushImage(t, reg, imgRef,
		layerOf(t, dir("var/"), dir("var/lib/"), dir("var/lib/pg/"), file("var/lib/pg/PG_VERSION", "16"), file("var/lib/pg/stale", "x"),
			dir("var/lib/pg/base/"), file("var/lib/pg/base/1", "data"), file("etc/passwd", "root")),
		layerOf(t, file("var/lib/pg/.wh.stale", ""), file("var/lib/pg/base/2", "more")))
	ipod := e.cr.RunPod("pg", "shop", "uid-pg", map[string]string{podKey: "- {target: /var/lib/postgresql/data, from: \"" + imgRef + "\", fromPath: /var/lib/pg}"})
	ictr, err := createSeeded(t, e, ipod, "pg")
	if err != nil {
		t.Fatalf("container with from: an image: %v", err)
	}
	e.cr.Start(ictr)
	if got := trim(e.cr.Sh(ictr, "cd /var/lib/postgresql/data && find . | sort && cat PG_VERSION base/2")); got != ".\n./PG_VERSION\n./base\n./base/1\n./base/2\n16more" {
		t.Errorf("volume from the image's /var/lib/pg:\n%s", got)
	}

	// Hostile artifacts, with pull's and import's checks.
	zeros := make([]byte, 2<<20)
	pushTar(t, reg, reg.Host+"/shop/dotdot:1", []tarEntry{dir("./"), file("ok", "x"), file("../escape", "x")}, nil)
	pushTar(t, reg, reg.Host+"/shop/zeros:1", []tarEntry{dir("./"), {hdr: tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(zeros))}, data: zeros}}, nil)
	pushTar(t, reg, reg.Host+"/shop/bomb:1", []tarEntry{dir("./"), {hdr: tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(zeros))}, data: zeros}},
		func(a *ociartifact.Artifact) {
			l := &a.Config.Layers[len(a.Config.Layers)-1]
			l.Bytes, l.TarSize, a.Config.Bytes = 10, 4096, 10
		})

	before := e.volumeList()
	for _, c := range []struct{ ann, want string }{
		{"- {source: other, target: /data, from: \"" + reg.Host + "/shop/dotdot:1\"}", `entry "../escape": has a .. component`},
		{"- {source: other, target: /data, from: \"" + reg.Host + "/shop/bomb:1\"}", "expands past"},
		{"- {source: other, target: /data, size: 1Mi, from: \"" + reg.Host + "/shop/zeros:1\"}", "more than the 1048576 allowed"},
		// A closed port: the refusal is the policy's, not a connection's.
		{"- {source: other, target: /data, from: \"127.0.0.1:1/shop/pg:1\"}", `from "127.0.0.1:1/shop/pg:1": not allowed for namespace "shop" by registries.allow`},
		{"- {source: other, target: /data, from: \"" + reg.Host + "/elsewhere/pg:1\"}", "not allowed for namespace \"shop\" by registries.allow"},
		{"- {source: other, target: /data, from: \"" + reg.Host + "/shop/missing:1\"}", `from "` + reg.Host + `/shop/missing:1": pulling`},
		{"- {target: /data, from: \"" + imgRef + "\", fromPath: /nothere}", "the image has no directory /nothere"},
	} {
		bad := e.cr.RunPod("bad", "shop", "uid-bad", map[string]string{podKey: c.ann})
		_, err := createSeeded(t, e, bad, "app")
		// crictl prints the message quoted.
		if err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), `\"`, `"`), c.want) {
			t.Errorf("%s: %v; want an error with %q", c.ann, err, c.want)
		}
		e.cr.RmPod(bad)
	}
	if after := e.volumeList(); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("volumes after the failures: %v, before: %v", after, before)
	}
}

// layerOf is the tar of entries as an image layer, every entry dated
// 2001-09-09.
func layerOf(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	dated := make([]tarEntry, len(entries))
	for i, e := range entries {
		e.hdr.ModTime = time.Unix(1e9, 0)
		dated[i] = e
	}
	return tarOf(t, dated)
}

// pushImage pushes an image of the layers, lowest first, to ref in reg.
func pushImage(t *testing.T, reg *harness.Registry, ref string, layers ...[]byte) {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(reg.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if err := remote.Write(r, img, remote.WithTransport(tr), remote.WithAuth(&authn.Basic{Username: reg.User, Password: reg.Password})); err != nil {
		t.Fatalf("pushing image %s: %v", ref, err)
	}
}
