package volumes

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func storeWith(b *testing.B, n int) *Store {
	b.Helper()
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	fill(b, s, n)
	return s
}

func fill(b *testing.B, s *Store, n int) {
	b.Helper()
	for i := 0; i < n; i++ {
		if _, err := s.Create("default", fmt.Sprintf("vol-%05d", i), CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkList10k(b *testing.B) {
	s := storeWith(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		vols, err := s.List(ListOptions{Namespace: "default"})
		if err != nil || len(vols) != 10000 {
			b.Fatal(len(vols), err)
		}
	}
}

// BenchmarkAcquireRelease acquires five existing volumes (three named, two
// anonymous of the container's pod, as for a restarted container) and
// releases them, in a store of 10 and of 10,000 volumes: the path of every
// CreateContainer and RemoveContainer, which must not grow with the store.
// Acquire's own latency is reported as p50/p99.
func BenchmarkAcquireRelease(b *testing.B) {
	const ctr = "4f9c6b1e0d2a8b7c3e5f6a9d0b1c2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"
	owner := func(target string) *Owner {
		return &Owner{PodSandboxID: "6e0b3f2a1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f", Container: "app", Target: target}
	}
	reqs := []Request{
		{Namespace: "default", Name: "vol-00001"},
		{Namespace: "default", Name: "vol-00002"},
		{Namespace: "default", Name: "vol-00003"},
		{Namespace: "default", Owner: owner("/cache")},
		{Namespace: "default", Owner: owner("/scratch")},
	}
	for _, n := range []int{10, 10000} {
		// Filled once: a parent benchmark runs once, its sub-benchmark many times.
		s := storeWith(b, n)
		if _, _, err := s.Acquire(ctr, reqs, nil); err != nil {
			b.Fatal(err)
		}
		if err := s.Release(ctr); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("volumes=%d", n), func(b *testing.B) {
			acquire := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				vols, _, err := s.Acquire(ctr, reqs, nil)
				acquire = append(acquire, time.Since(start))
				if err != nil || len(vols) != 5 {
					b.Fatal(len(vols), err)
				}
				if err := s.Release(ctr); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(acquire)
			b.ReportMetric(float64(acquire[len(acquire)/2].Microseconds()), "acquire-p50-µs")
			b.ReportMetric(float64(acquire[(len(acquire)*99+99)/100-1].Microseconds()), "acquire-p99-µs")
		})
	}
}

// BenchmarkAcquireNew acquires a new named and a new anonymous volume for a
// new container, as a container of the `volumes` scenario of test/bench does:
// the store's share of that container's CreateContainer, fsyncs included.
func BenchmarkAcquireNew(b *testing.B) {
	s := storeWith(b, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctr, pod := fmt.Sprintf("ctr-%d", i), fmt.Sprintf("pod-%d", i)
		reqs := []Request{
			{Namespace: "default", Name: fmt.Sprintf("named-%d", i)},
			{Namespace: "default", Owner: &Owner{PodSandboxID: pod, Container: "app", Target: "/anon"}},
		}
		if _, _, err := s.Acquire(ctr, reqs, nil); err != nil {
			b.Fatal(err)
		}
	}
}
