package plugin_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// newBenchRuntime is newRuntime with the store at root, which may be shared
// between runs, and a host directory bind mounts may come from.
func newBenchRuntime(b *testing.B, root string) *runtime {
	b.Helper()
	shared := filepath.Join(b.TempDir(), "shared")
	if err := os.MkdirAll(filepath.Join(shared, "conf"), 0o755); err != nil {
		b.Fatal(err)
	}
	rt := newRuntime(b, func(c *config.Config) {
		c.Root = root
		c.BindMounts.AllowedHostPaths = []string{shared}
	})
	rt.connect()
	return rt
}

// benchPod is a pod whose containers get five volumes: two named, one
// anonymous, one tmpfs and one bind mount.
func (rt *runtime) benchPod(i int) *api.PodSandbox {
	id := "pod-" + strconv.Itoa(i)
	return newPod(id, "default", map[string]string{plugin.VolumesKey + "/pod": "" +
		"- bench-shared:/shared\n" +
		"- bench-cache:/cache:ro\n" +
		"- /scratch\n" +
		"- {type: tmpfs, target: /run/secrets, size: 16Mi}\n" +
		"- " + rt.cfg.BindMounts.AllowedHostPaths[0] + "/conf:/etc/app:ro\n"})
}

// createOne runs CreateContainer for container i in its own pod and checks
// it got its five mounts.
func (rt *runtime) createOne(ctx context.Context, i int) (*api.PodSandbox, *api.Container, error) {
	pod := rt.benchPod(i)
	ctr := newContainer("ctr-"+strconv.Itoa(i), pod.Id, "app")
	resp, err := rt.nri.CreateContainer(ctx, &adaptation.CreateContainerRequest{Pod: pod, Container: ctr})
	if err != nil {
		return nil, nil, err
	}
	if n := len(resp.GetAdjust().GetMounts()); n != 5 {
		return nil, nil, fmt.Errorf("container %d got %d mounts, want 5 (is the plugin still connected?)", i, n)
	}
	return pod, ctr, nil
}

// removeOne removes the container and its pod, which removes the anonymous
// volume, so the store keeps its size across iterations.
func (rt *runtime) removeOne(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	if err := rt.nri.RemoveContainer(ctx, &adaptation.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
		return err
	}
	return rt.nri.RemovePodSandbox(ctx, &adaptation.RemovePodSandboxRequest{Pod: pod})
}

// fillStore creates n named volumes below root with the store API.
func fillStore(b *testing.B, root string, n int) {
	b.Helper()
	s, err := volumes.Open(root)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < n; i++ {
		if _, err := s.Create("default", fmt.Sprintf("filler-%05d", i), volumes.CreateOptions{Labels: map[string]string{"bench": "true"}}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateContainer measures one CreateContainer with five volumes,
// through NRI's runtime side and a real socket, on an empty store and on one
// that already holds 10,000 volumes. Only CreateContainer is timed; removing
// the container and its pod between iterations keeps the store's size.
func BenchmarkCreateContainer(b *testing.B) {
	// The big store is made once and shared by every run of its sub-benchmark.
	bigRoot := filepath.Join(b.TempDir(), "store")
	filled := false
	for _, bc := range []struct {
		name string
		root func(b *testing.B) string
	}{
		{"store=empty", func(b *testing.B) string { return filepath.Join(b.TempDir(), "store") }},
		{"store=10000", func(b *testing.B) string {
			if !filled {
				start := time.Now()
				fillStore(b, bigRoot, 10000)
				b.Logf("created 10,000 volumes in %v", time.Since(start).Round(time.Millisecond))
				filled = true
			}
			return bigRoot
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := newBenchRuntime(b, bc.root(b))
			ctx := context.Background()
			durations := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				pod, ctr, err := rt.createOne(ctx, i)
				durations = append(durations, time.Since(start))
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := rt.removeOne(ctx, pod, ctr); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			slices.Sort(durations)
			b.ReportMetric(float64(percentile(durations, 50).Microseconds()), "p50-µs")
			b.ReportMetric(float64(percentile(durations, 99).Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkCreateContainerNewVolumes is CreateContainer for the container of
// test/bench's volumes scenario: a new named volume, a new anonymous one and
// a tmpfs, in a new pod each time. It times the NRI request alone; making a
// new named volume durable is the bulk of it unless the hook does it.
//
// The sub-benchmarks differ in what the plugin knows of the image: nothing
// (containerd 2.2, or the image's first container), so the copy-up hook
// gets both volumes; or, from an earlier container of the image (containerd
// 2.4 sends its config digest), that it has nothing at either target, so
// there is no hook and the named volume is made durable in the request.
func BenchmarkCreateContainerNewVolumes(b *testing.B) {
	b.Run("hook", func(b *testing.B) { benchNewVolumes(b, false) })
	b.Run("known-empty", func(b *testing.B) { benchNewVolumes(b, true) })
}

func benchNewVolumes(b *testing.B, knownEmpty bool) {
	rt := newBenchRuntime(b, filepath.Join(b.TempDir(), "store"))
	var image *api.Image
	if knownEmpty {
		digest := rt.writeImageConfig(`{"config":{}}`)
		image = &api.Image{Name: "localhost/app:bench", ConfigDigest: digest}
		for _, target := range []string{"/named", "/anon"} {
			if err := rt.store().EmptyTargets().Record(strings.TrimPrefix(digest, "sha256:"), target); err != nil {
				b.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := strconv.Itoa(i)
		pod := newPod("pod-"+n, "default", map[string]string{plugin.VolumesKey + "/pod": "" +
			"- named-" + n + ":/named\n- /anon\n- {type: tmpfs, target: /scratch, size: 4Mi}\n"})
		ctr := newContainer("ctr-"+n, pod.Id, "app")
		ctr.Image = image
		start := time.Now()
		resp, err := rt.nri.CreateContainer(ctx, &adaptation.CreateContainerRequest{Pod: pod, Container: ctr})
		durations = append(durations, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if n := len(resp.GetAdjust().GetMounts()); n != 3 {
			b.Fatalf("container %d got %d mounts, want 3", i, n)
		}
		if hooks := len(resp.GetAdjust().GetHooks().GetCreateRuntime()); hooks != 0 == knownEmpty {
			b.Fatalf("container %d got %d hooks; known-empty targets: %v", i, hooks, knownEmpty)
		}
		// Containers start tens of milliseconds apart (runc, the shim,
		// the hook); back to back, the background syncs of the earlier
		// requests would wait on the same journal as the next request.
		b.StopTimer()
		time.Sleep(30 * time.Millisecond)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(percentile(durations, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(durations, 99).Microseconds()), "p99-µs")
}

// percentile returns the p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// BenchmarkPluginMemory creates and removes 1,000 containers (with their
// pods) through NRI's runtime side and reports the process's resident set
// and in-use heap before and after: a leak per container shows as growth.
// The process holds both sides of NRI, so the numbers bound the plugin's.
func BenchmarkPluginMemory(b *testing.B) {
	const containers = 1000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rt := newBenchRuntime(b, filepath.Join(b.TempDir(), "store"))
		ctx := context.Background()
		// One round first, so that lazily made pools and caches are not
		// counted as growth.
		for j := 0; j < 10; j++ {
			pod, ctr, err := rt.createOne(ctx, -1-j)
			if err != nil {
				b.Fatal(err)
			}
			if err := rt.removeOne(ctx, pod, ctr); err != nil {
				b.Fatal(err)
			}
		}
		rssBefore, heapBefore := memoryInUse(b)
		b.StartTimer()
		for j := 0; j < containers; j++ {
			pod, ctr, err := rt.createOne(ctx, j)
			if err != nil {
				b.Fatal(err)
			}
			if err := rt.removeOne(ctx, pod, ctr); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		rssAfter, heapAfter := memoryInUse(b)
		const mib = 1 << 20
		b.ReportMetric(float64(rssBefore)/mib, "rss-before-MiB")
		b.ReportMetric(float64(rssAfter)/mib, "rss-after-MiB")
		b.ReportMetric(float64(heapBefore)/mib, "heap-before-MiB")
		b.ReportMetric(float64(heapAfter)/mib, "heap-after-MiB")
		b.ReportMetric(float64(int64(heapAfter)-int64(heapBefore))/containers, "heap-growth-B/container")
		vols, err := func() ([]*volumes.Volume, error) {
			s, err := volumes.Open(rt.cfg.Root)
			if err != nil {
				return nil, err
			}
			defer s.Close()
			return s.List(volumes.ListOptions{Namespace: "default"})
		}()
		if err != nil || len(vols) != 2 {
			b.Fatalf("store after %d containers: %d volumes, %v; want the 2 named ones", containers, len(vols), err)
		}
	}
}

// memoryInUse returns the process's VmRSS and, after a GC, its in-use heap.
func memoryInUse(b *testing.B) (rss, heap uint64) {
	b.Helper()
	goruntime.GC()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10, ms.HeapInuse
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0, 0
}
