package plugin_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// layVolumes writes n volumes of namespace ns below root in the on-disk
// layout (ROOT/volumes/NS/NAME/{_data,volume.json}) without the store's
// fsyncs, so that a store of 50,000 volumes is made in seconds. anonOwner,
// when set, makes volume i the anonymous volume of the pod it returns.
func layVolumes(b *testing.B, root, ns string, names []string, owners []*volumes.Owner) {
	b.Helper()
	for i, name := range names {
		dir := filepath.Join(root, "volumes", ns, name)
		if err := os.MkdirAll(filepath.Join(dir, "_data"), 0o755); err != nil {
			b.Fatal(err)
		}
		meta := fmt.Sprintf(`{"Name":%q,"Namespace":%q,"CreatedAt":"2026-01-01T00:00:00Z","Labels":{},"Anonymous":false}`, name, ns)
		if owners != nil {
			o := owners[i]
			meta = fmt.Sprintf(`{"Name":%q,"Namespace":%q,"CreatedAt":"2026-01-01T00:00:00Z","Labels":{},"Anonymous":true,`+
				`"Owner":{"PodSandboxID":%q,"Container":%q,"Target":%q}}`, name, ns, o.PodSandboxID, o.Container, o.Target)
		}
		if err := os.WriteFile(filepath.Join(dir, "volume.json"), []byte(meta), 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

func quietLogger() *logrus.Logger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return log
}

// syncBenchRoot is the store BenchmarkSynchronize lays out once per process;
// TestMain removes it.
var (
	syncBenchRoot string
	syncBenchLaid bool
)

// BenchmarkSynchronize measures the Synchronize request after a plugin
// restart, with a store of 50,000 volumes (49,000 named, 1,000 anonymous)
// and 1,000 running containers, each in its own pod with one named and its
// pod's anonymous volume. The request must stay far below containerd's 2 s
// plugin_request_timeout; the store-wide pass that removes the volumes of
// gone pods runs after it, in the background, and is reported apart
// (orphan-pass-ms, the store's RemoveOrphans on the same store).
func BenchmarkSynchronize(b *testing.B) {
	const named, containers = 49000, 1000
	// Laid out once and shared by every run: b.TempDir would go with the first.
	if syncBenchRoot == "" {
		dir, err := os.MkdirTemp("", "nrivol-bench-sync-")
		if err != nil {
			b.Fatal(err)
		}
		syncBenchRoot = filepath.Join(dir, "store")
		syncBenchLaid = false
	}
	root := syncBenchRoot
	start := time.Now()
	names := make([]string, named)
	for i := range names {
		names[i] = fmt.Sprintf("vol-%05d", i)
	}
	if !syncBenchLaid {
		layVolumes(b, root, "default", names, nil)
	}
	pods := make([]*api.PodSandbox, containers)
	ctrs := make([]*api.Container, containers)
	anonNames := make([]string, containers)
	owners := make([]*volumes.Owner, containers)
	for i := range ctrs {
		podID := fmt.Sprintf("pod%059d", i)
		pods[i] = newPod(podID, "default", nil)
		owners[i] = &volumes.Owner{PodSandboxID: podID, Container: "app", Target: "/cache"}
		anonNames[i] = volumes.AnonymousName(*owners[i])
		ctrs[i] = newContainer(fmt.Sprintf("ctr%059d", i), podID, "app")
		ctrs[i].Mounts = []*api.Mount{
			{Destination: "/data", Type: "bind", Source: filepath.Join(root, "volumes", "default", names[i], "_data")},
			{Destination: "/cache", Type: "bind", Source: filepath.Join(root, "volumes", "default", anonNames[i], "_data")},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/hosts"},
		}
	}
	if !syncBenchLaid {
		layVolumes(b, root, "default", anonNames, owners)
		b.Logf("laid out %d volumes in %v", named+containers, time.Since(start).Round(time.Millisecond))
		syncBenchLaid = true
		// The benchmark measures requests, not the write-back of the layout.
		unix.Sync()
	}

	cfg := config.Default()
	cfg.Root = root
	p, err := plugin.New(cfg, quietLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := p.Synchronize(context.Background(), pods, ctrs); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(percentile(durations, 50).Microseconds())/1000, "sync-p50-ms")
	b.ReportMetric(float64(durations[len(durations)-1].Microseconds())/1000, "sync-max-ms")

	s, err := volumes.Open(root)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	live := map[string]bool{}
	for _, pod := range pods {
		live[pod.Id] = true
	}
	start = time.Now()
	if _, err := s.RemoveOrphans(func(pod string) bool { return live[pod] }, false); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "orphan-pass-ms")
	if v, err := s.Get("default", names[7]); err != nil || len(v.UsedBy) != 1 {
		b.Fatalf("after Synchronize %s is used by %v (%v), want one container", names[7], v.UsedBy, err)
	}
}

// BenchmarkCreateContainerDuringPrune measures CreateContainer (five
// volumes, through NRI's runtime side) while a `volume prune -a` of 10,000
// unused volumes runs on the same store through a store of its own, as the
// CLI's process would: every request must stay far below containerd's 2 s
// plugin_request_timeout. It reports the longest and the median request
// during the prune, how many ran, and how long the prune took.
func BenchmarkCreateContainerDuringPrune(b *testing.B) {
	const n = 10000
	var worst time.Duration
	var during []time.Duration
	var pruneTime time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := filepath.Join(b.TempDir(), "store")
		names := make([]string, n)
		for j := range names {
			names[j] = "prune-me-" + strconv.Itoa(j)
		}
		layVolumes(b, root, "default", names, nil)
		rt := newBenchRuntime(b, root)
		cli, err := volumes.Open(root)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.StartTimer()
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			removed, _, err := cli.Prune(volumes.PruneOptions{Namespace: "default", All: true,
				Filter: func(v *volumes.Volume) bool { return len(v.Name) > 9 && v.Name[:9] == "prune-me-" }})
			if err == nil && len(removed) != n {
				err = fmt.Errorf("prune removed %d volumes, want %d", len(removed), n)
			}
			pruneTime = time.Since(start)
			done <- err
		}()
		for j := 0; ; j++ {
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
				j = -1
			default:
			}
			if j < 0 {
				break
			}
			t0 := time.Now()
			pod, ctr, err := rt.createOne(ctx, i*100000+j)
			d := time.Since(t0)
			if err != nil {
				b.Fatalf("CreateContainer during the prune: %v", err)
			}
			during = append(during, d)
			worst = max(worst, d)
			if err := rt.removeOne(ctx, pod, ctr); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		cli.Close()
	}
	slices.Sort(during)
	b.ReportMetric(float64(worst.Microseconds())/1000, "create-max-ms")
	b.ReportMetric(float64(percentile(during, 50).Microseconds())/1000, "create-p50-ms")
	b.ReportMetric(float64(percentile(during, 99).Microseconds())/1000, "create-p99-ms")
	b.ReportMetric(float64(len(during))/float64(b.N), "creates/prune")
	b.ReportMetric(float64(pruneTime.Milliseconds()), "prune-ms")
}

// cleanUpBenchmarks removes what the benchmarks left for the whole run;
// TestMain calls it once every test and benchmark has run.
func cleanUpBenchmarks() {
	if syncBenchRoot != "" {
		os.RemoveAll(filepath.Dir(syncBenchRoot))
	}
}
