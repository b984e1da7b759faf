package e2e

import (
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// stallProxy forwards TCP connections to target until limit bytes have gone
// in the direction up (client to server) or down, then stops forwarding
// and closes stalled: the client waits on a connection that stays open.
type stallProxy struct {
	addr    string
	stalled chan struct{}
	once    sync.Once
}

func newStallProxy(t *testing.T, target string, up bool, limit int64) *stallProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: l.Addr().String(), stalled: make(chan struct{})}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	var passed atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			pipe := func(dst, src net.Conn, counted bool) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if counted && passed.Add(int64(n)) > limit {
						p.once.Do(func() { close(p.stalled) })
						return // stop forwarding; leave both open
					}
					if n > 0 {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			go pipe(s, c, up)
			go pipe(c, s, !up)
		}
	}()
	return p
}

// interrupt starts the CLI with args, waits until the proxy stalls it in
// the middle of a transfer, sends SIGINT and returns its exit and stderr.
func interrupt(t *testing.T, bin string, p *stallProxy, args ...string) (error, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-p.stalled:
	case err := <-done:
		t.Fatalf("%v ended before the proxy stalled it: %v %s", args, err, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		return err, stderr.String()
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not end within a minute of SIGINT", args)
	}
	return nil, ""
}

// TestVolumePushPullInterrupted: a pull interrupted half-way leaves no
// volume, and a push interrupted half-way leaves no temporary layers.
func TestVolumePushPullInterrupted(t *testing.T) {
	bin := cliBin(t)
	reg := harness.StartRegistry(t)
	a, b := newNode(t, bin, reg), newNode(t, bin, reg)
	a.must("create", "data")
	fillVolume(t, a.data("data"), 1000, 16<<10)
	a.must("push", "--layer-size", "1Mi", "data", reg.Host+"/int/data:1")

	down := newStallProxy(t, reg.Host, false, 4<<20)
	err, stderr := interrupt(t, bin, down, "volume", "pull", down.addr+"/int/data:1", "data", "--root", b.root,
		"--auth-file", reg.AuthFileFor(t, down.addr), "--ca-file", reg.CAFile)
	if err == nil || !strings.Contains(stderr, "context canceled") {
		t.Errorf("interrupted pull: %v %q", err, stderr)
	}
	if out := b.must("ls", "-q"); out != "" {
		t.Errorf("volumes left by the interrupted pull: %q", out)
	}

	// New data, so that the push has more to upload than the proxy passes.
	big := make([]byte, 8<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.data("data"), "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	up := newStallProxy(t, reg.Host, true, 4<<20)
	err, stderr = interrupt(t, bin, up, "volume", "push", "--layer-size", "1Mi", "--tmp-dir", tmp, "data", up.addr+"/int/data:2",
		"--root", a.root, "--auth-file", reg.AuthFileFor(t, up.addr), "--ca-file", reg.CAFile)
	if err == nil || !strings.Contains(stderr, "context canceled") {
		t.Errorf("interrupted push: %v %q", err, stderr)
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) != 0 {
		t.Errorf("left in --tmp-dir by the interrupted push: %v %v", entries, err)
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Errorf("interrupted push did not exit by itself: %v", err)
	}
}
