package volumes

import (
	"fmt"
	"testing"
)

func storeWith(b *testing.B, n int) *Store {
	b.Helper()
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for i := 0; i < n; i++ {
		if _, err := s.Create("default", fmt.Sprintf("vol-%05d", i), nil); err != nil {
			b.Fatal(err)
		}
	}
	return s
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

func BenchmarkAcquireRelease10k(b *testing.B) {
	s := storeWith(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Acquire("c", []Request{{Namespace: "default", Name: "vol-00001"}}); err != nil {
			b.Fatal(err)
		}
		if err := s.Release("c"); err != nil {
			b.Fatal(err)
		}
		if err := s.Release("unknown"); err != nil {
			b.Fatal(err)
		}
	}
}
