package copyup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// The benchmark tree: benchFiles small files spread over directories, and
// one large file of $COPYUP_BENCH_LARGE_BYTES (default 64 MiB) with no holes.
const (
	benchFiles       = 20000
	benchFilesPerDir = 100
	benchSmallSize   = 1024
	benchLargeEnv    = "COPYUP_BENCH_LARGE_BYTES"
	benchLargeSize   = 64 << 20
)

// benchTree is built on first use by a benchmark only, so plain `go test`
// never pays for it, and shared by BenchmarkCopy and BenchmarkCpA so that
// both copy the same bytes.
var benchTree = struct {
	once  sync.Once
	dir   string // holds rootfs/data and scratch destinations
	bytes int64
	err   error
}{}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchTree.dir != "" {
		os.RemoveAll(benchTree.dir)
	}
	os.Exit(code)
}

// benchSource returns the rootfs of the benchmark tree, whose /data holds it.
func benchSource(b *testing.B) (rootfs string, size int64) {
	b.Helper()
	benchTree.once.Do(func() { benchTree.dir, benchTree.bytes, benchTree.err = buildBenchTree() })
	if benchTree.err != nil {
		b.Fatal(benchTree.err)
	}
	return filepath.Join(benchTree.dir, "rootfs"), benchTree.bytes
}

func buildBenchTree() (string, int64, error) {
	large := int64(benchLargeSize)
	if s := os.Getenv(benchLargeEnv); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return "", 0, fmt.Errorf("%s=%q: want a byte count", benchLargeEnv, s)
		}
		large = n
	}
	dir, err := os.MkdirTemp("", "copyup-bench-")
	if err != nil {
		return "", 0, err
	}
	data := filepath.Join(dir, "rootfs", "data")
	small := make([]byte, benchSmallSize)
	for i := range small {
		small[i] = byte(i * 7)
	}
	for i := range benchFiles {
		sub := filepath.Join(data, fmt.Sprintf("d%03d", i/benchFilesPerDir))
		if i%benchFilesPerDir == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return dir, 0, err
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), small, 0o644); err != nil {
			return dir, 0, err
		}
	}
	f, err := os.Create(filepath.Join(data, "large"))
	if err != nil {
		return dir, 0, err
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*31 + 1) // no zero pages: nothing a file system could skip
	}
	for left := large; left > 0; left -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
			f.Close()
			return dir, 0, err
		}
	}
	if err := f.Close(); err != nil {
		return dir, 0, err
	}
	return dir, benchFiles*benchSmallSize + large, nil
}

// benchCopy runs copyTo into a fresh empty directory per iteration; making
// and deleting those directories is not timed. Each iteration starts after a
// sync, so that it neither pays for writing back the one before nor waits
// for the journal to free what the one before deleted.
func benchCopy(b *testing.B, copyTo func(rootfs, dst string) error) {
	rootfs, size := benchSource(b)
	unix.Sync()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dst := filepath.Join(benchTree.dir, fmt.Sprintf("dst-%d", i))
		if err := os.Mkdir(dst, 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := copyTo(rootfs, dst); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
		unix.Sync()
		b.StartTimer()
	}
	b.ReportMetric(float64(benchFiles+1)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkCopy measures Copy on the benchmark tree.
func BenchmarkCopy(b *testing.B) {
	benchCopy(b, func(rootfs, dst string) error {
		st, err := Copy(rootfs, "/data", dst, Options{})
		if err == nil && st.Files != benchFiles+1 {
			err = fmt.Errorf("copied %d files, want %d", st.Files, benchFiles+1)
		}
		return err
	})
}

// BenchmarkCpA measures `cp -a` on the same tree, the yardstick for Copy.
func BenchmarkCpA(b *testing.B) {
	if _, err := exec.LookPath("cp"); err != nil {
		b.Skip("no cp")
	}
	benchCopy(b, func(rootfs, dst string) error {
		out, err := exec.Command("cp", "-a", filepath.Join(rootfs, "data")+"/.", dst).CombinedOutput()
		if err != nil {
			return fmt.Errorf("cp -a: %w: %s", err, out)
		}
		return nil
	})
}
