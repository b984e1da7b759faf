package volumes

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// BenchmarkSnapshotImage takes snapshots of a 1 GiB sized volume that holds
// 256 MiB in 64 files, on xfs with reflinks and on the ext4 of the temporary
// directory (a sparse copy), and reports how long writers were blocked: the
// freeze's median and longest, in ms.
func BenchmarkSnapshotImage(b *testing.B) {
	testutil.RequireRoot(b, "needs root")
	for _, tc := range []struct {
		name string
		root func(t testing.TB) string
	}{
		{"xfs-reflink", xfsRoot},
		{"ext4-copy", func(t testing.TB) string { return t.TempDir() }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := openSizedAt(b, tc.root(b))
			if _, err := s.Create("default", "db", CreateOptions{Size: 1 << 30}); err != nil {
				b.Fatal(err)
			}
			vols, _, err := s.Acquire("w", []Request{{Namespace: "default", Name: "db"}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4<<20)
			for i := range buf {
				buf[i] = byte(i * 7)
			}
			for i := 0; i < 64; i++ {
				if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, "f"+strconv.Itoa(i)), buf, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			var frozen []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				sn, err := s.Snapshots().Create("default", "db", "b"+strconv.Itoa(i), SnapshotOptions{})
				if err != nil {
					b.Fatal(err)
				}
				frozen = append(frozen, sn.Frozen)
			}
			b.StopTimer()
			slices.Sort(frozen)
			b.ReportMetric(float64(frozen[len(frozen)/2].Microseconds())/1000, "frozen-p50-ms")
			b.ReportMetric(float64(frozen[len(frozen)-1].Microseconds())/1000, "frozen-max-ms")
			if err := s.Release("w"); err != nil {
				b.Fatal(err)
			}
		})
	}
}
