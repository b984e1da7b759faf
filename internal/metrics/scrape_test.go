package metrics_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/metrics"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// TestScrapeReadsNoVolumeMetadata checks that a scrape answers the volume
// counts from what the store keeps in memory, not by reading every
// volume.json: a volume.json spoilt behind the store's back after the first
// scrape changes nothing, and the plugin's own changes still show.
func TestScrapeReadsNoVolumeMetadata(t *testing.T) {
	root := t.TempDir()
	store, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, name := range []string{"a", "b", "c"} {
		if _, err := store.Create("shop", name, volumes.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	h := metrics.New(func() *volumes.Store { return store }).Handler()
	const named = `nri_volumes_volumes{kind="named",namespace="shop"} `
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, named+"3\n") {
		t.Fatalf("first scrape lacks %s3", named)
	}
	for _, name := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(root, "volumes", "shop", name, "volume.json"), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, named+"3\n") {
		t.Errorf("a scrape read the volumes' metadata: it lost the two spoilt volumes\n%s", grepVolumes(body))
	}
	if _, err := store.Create("shop", "d", volumes.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := store.Remove("shop", "c"); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, named+"3\n") {
		t.Errorf("after creating d and removing c: want %s3\n%s", named, grepVolumes(body))
	}
}

func grepVolumes(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "nri_volumes_volume") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestServeDefaultsToLoopback checks that an address without a host serves
// the node's loopback only: the metrics name every namespace's volumes, and
// the DaemonSet shares the node's network.
func TestServeDefaultsToLoopback(t *testing.T) {
	store, err := volumes.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, _, err := metrics.New(func() *volumes.Store { return store }).Serve(ctx, ":0")
	if err != nil {
		t.Fatal(err)
	}
	if ip := addr.(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Errorf("--metrics-address :0 listens on %s, want the loopback", addr)
	}
}
