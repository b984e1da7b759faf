package plugin_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/ociartifact"
	"github.com/nri-volumes/nri-volumes/plugin"
)

// BenchmarkSeed50Pods creates 50 pods at once whose anonymous volumes are
// seeded from one 16 MiB artifact (four layers) in a local registry, as
// kubelet would, retrying while the plugin says the pull goes on. It
// reports the layer blobs the registry served: the node's blob cache makes
// that one download of each layer, not 50.
func BenchmarkSeed50Pods(b *testing.B) {
	const pods = 50
	host, ca, blobGets := seedRegistry(b)
	rng := rand.New(rand.NewPCG(1, 2))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := make([]byte, 4<<20)
	for i := range 4 {
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	tw.Close()
	art, err := ociartifact.Build(&buf, b.TempDir(), ociartifact.Meta{Volume: "v", Namespace: "a"}, ociartifact.SplitFor(1<<20))
	if err != nil {
		b.Fatal(err)
	}
	ref := host + "/shop/data:1"
	if _, err := art.Push(context.Background(), ref, ociartifact.RemoteOptions{CAFile: ca}); err != nil {
		b.Fatal(err)
	}
	ann := map[string]string{plugin.VolumesKey + "/pod": "- {target: /data, from: \"" + ref + "\"}"}
	var served int64
	b.ResetTimer()
	for n := range b.N {
		b.StopTimer()
		rt := newRuntime(b, func(c *config.Config) {
			c.Registries.CAFile = ca
			c.Registries.Allow = []config.PullRule{{Namespaces: []string{"shop"}, Refs: []string{host + "/shop/*"}}}
		})
		rt.connect()
		before := blobGets.Load()
		b.StartTimer()
		var wg sync.WaitGroup
		for i := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("p%d-%d", n, i)
				if _, err := createRetried(b, rt, newPod(id, "shop", ann), newContainer("c-"+id, id, "db")); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		// Each pull reads its config blob; the rest are layers.
		served += blobGets.Load() - before - pods
	}
	b.ReportMetric(float64(served)/float64(b.N), "layerdownloads/op")
	b.ReportMetric(float64(len(art.Layers)), "layers")
}
