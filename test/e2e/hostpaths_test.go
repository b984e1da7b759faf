package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// hostRootMarker puts a file with a random name in the host's / and returns
// its name: a container that finds it below a mount point was given the
// host's root.
func hostRootMarker(t *testing.T) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "nri-volumes-e2e-host-root-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(filepath.Join("/", name), []byte("the host's root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join("/", name)) })
	return name
}

// swapper keeps exchanging two entries of dir (renameat2 RENAME_EXCHANGE, so
// one of the two is always there) until stopped, as a pod that can write in
// dir would.
type swapper struct {
	stop chan struct{}
	done sync.WaitGroup
	n    int
	err  error
}

func startSwapper(t *testing.T, dir, a, b string) *swapper {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &swapper{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		defer unix.Close(fd)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			if err := unix.Renameat2(fd, a, fd, b, unix.RENAME_EXCHANGE); err != nil {
				s.err = err
				return
			}
			s.n++
			time.Sleep(200 * time.Microsecond)
		}
	}()
	t.Cleanup(s.halt)
	return s
}

// halt stops the swapper and waits for it; it is safe to call twice.
func (s *swapper) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
}

// raceContainers creates and starts n containers in pod while a swapper
// runs, and returns what `cat /x/inside` shows in each that started, or
// "HOST ROOT" when /x holds the host's root. Creations the plugin refuses
// must name the annotation.
func raceContainers(t *testing.T, e *env, pod *harness.Pod, n int, marker string) (seen []string) {
	t.Helper()
	for i := 0; i < n; i++ {
		id, err := e.cr.CreateContainer(pod, fmt.Sprintf("c%d", i), appImage, nil, nil)
		if err != nil {
			if !strings.Contains(err.Error(), podKey) {
				t.Errorf("container %d refused without naming %s: %v", i, podKey, err)
			}
			continue
		}
		e.cr.Start(id)
		seen = append(seen, e.cr.Sh(id, "if [ -e /x/"+marker+" ]; then echo HOST ROOT; else cat /x/inside; fi"))
		e.cr.Stop(id)
		e.cr.Rm(id)
	}
	return seen
}

// TestBindSourceSwapRace swaps a checked bind source for a symlink to / over
// and over while containers are created: the plugin must hand runc the very
// directory it checked, so no container ever sees the host's root.
func TestBindSourceSwapRace(t *testing.T) {
	allowed := t.TempDir()
	if err := os.Mkdir(filepath.Join(allowed, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(allowed, "d", "inside"), []byte("inside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(allowed, "swap")); err != nil {
		t.Fatal(err)
	}
	marker := hostRootMarker(t)
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{AllowedHostPaths: []string{allowed}})
	pod := e.cr.RunPod("race", "default", "uid-race", map[string]string{podKey: "- " + filepath.Join(allowed, "d") + ":/x"})

	sw := startSwapper(t, allowed, "d", "swap")
	seen := raceContainers(t, e, pod, 12, marker)
	sw.halt()
	if sw.err != nil {
		t.Fatalf("the swapper failed: %v", sw.err)
	}
	for i, s := range seen {
		if s != "inside\n" {
			t.Errorf("started container %d of %d sees %q at /x, not the checked directory", i+1, len(seen), s)
		}
	}
	if len(seen) == 0 {
		t.Fatalf("no container started while the source was swapped %d times; the race was never run", sw.n)
	}
	t.Logf("%d of 12 containers started, source swapped %d times", len(seen), sw.n)
}

// TestReadOnlyBindRecursive checks that a read-only bind mount and a
// read-only volume are read-only all the way down: a tmpfs mounted below the
// source on the host refuses writes in the container too.
func TestReadOnlyBindRecursive(t *testing.T) {
	allowed := t.TempDir()
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{AllowedHostPaths: []string{allowed}})
	e.volume("create", "ro-data")
	for _, dir := range []string{filepath.Join(allowed, "conf"), e.plugin.VolumeDir("default", "ro-data")} {
		sub := filepath.Join(dir, "sub")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatalf("mount a tmpfs at %s: %v", sub, err)
		}
		t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
	}
	pod := e.cr.RunPod("ro", "default", "uid-ro", map[string]string{
		podKey: "- " + filepath.Join(allowed, "conf") + ":/conf\n- ro-data:/data:ro",
	})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	for _, path := range []string{"/conf/f", "/conf/sub/f", "/data/f", "/data/sub/f"} {
		out, err := e.cr.ExecErr(id, "sh", "-c", "echo x > "+path)
		if err == nil {
			t.Errorf("writing %s in a read-only mount succeeded (%q)", path, out)
		}
	}
	for _, path := range []string{filepath.Join(allowed, "conf", "sub", "f"), filepath.Join(e.plugin.VolumeDir("default", "ro-data"), "sub", "f")} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("the container wrote %s on the host: %v", path, err)
		}
	}
}

// TestSubpath mounts a directory inside a named volume: the container sees
// and writes only that directory, a missing subpath is an error naming the
// annotation, the item and the subpath, and nothing is created for it.
func TestSubpath(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.volume("create", "data")
	data := e.plugin.VolumeDir("default", "data")
	if err := os.MkdirAll(filepath.Join(data, "logs", "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "top-secret"), []byte("not for the app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := e.cr.RunPod("sub", "default", "uid-sub", map[string]string{
		podKey: "- {source: data, target: /logs, subpath: logs/app}",
	})
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(id, "echo line > /logs/app.log")
	if got, err := os.ReadFile(filepath.Join(data, "logs", "app", "app.log")); err != nil || string(got) != "line\n" {
		t.Errorf("logs/app/app.log in the volume = %q, %v", got, err)
	}
	if out, err := e.cr.ExecErr(id, "ls", "/logs/top-secret", "/logs/logs"); err == nil {
		t.Errorf("the container sees beyond its subpath: %q", out)
	}
	if res := e.plugin.Volume("rm", "data"); res.Err == nil || !strings.Contains(res.Stderr, id[:12]) {
		t.Errorf("volume rm of a volume used through a subpath: %v, %q", res.Err, res.Stderr)
	}

	for _, tc := range []struct{ name, value string }{
		{"missing", "- {source: data, target: /x, subpath: logs/nope}"},
		{"volume made on first use", "- {source: fresh, target: /x, subpath: logs}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The container's own annotation wins over the pod's.
			_, err := e.cr.CreateContainer(pod, "bad", appImage, map[string]string{podKey: tc.value}, nil)
			if err == nil {
				t.Fatalf("container with %s was created", tc.value)
			}
			for _, want := range []string{podKey, "item 1", "subpath", "no such directory"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q: %v", want, err)
				}
			}
			if _, err := os.Stat(filepath.Join(data, "logs", "nope")); !os.IsNotExist(err) {
				t.Errorf("the missing subpath was created: %v", err)
			}
			if out := e.volume("ls", "-q"); out != "data\n" {
				t.Errorf("volumes after a refused subpath: %q, want data only", out)
			}
		})
	}
}

// TestSubpathSwapRace swaps a subpath's directory for a symlink to / over
// and over, as a container that writes in the volume could, while other
// containers mount the subpath: none may see the host's root.
func TestSubpathSwapRace(t *testing.T) {
	marker := hostRootMarker(t)
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.volume("create", "shared")
	data := e.plugin.VolumeDir("default", "shared")
	if err := os.Mkdir(filepath.Join(data, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "logs", "inside"), []byte("inside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(data, "swap")); err != nil {
		t.Fatal(err)
	}
	pod := e.cr.RunPod("subrace", "default", "uid-subrace", map[string]string{
		podKey: "- {source: shared, target: /x, subpath: logs}",
	})
	sw := startSwapper(t, data, "logs", "swap")
	seen := raceContainers(t, e, pod, 12, marker)
	sw.halt()
	if sw.err != nil {
		t.Fatalf("the swapper failed: %v", sw.err)
	}
	for i, s := range seen {
		if s != "inside\n" {
			t.Errorf("started container %d of %d sees %q at /x, not the subpath's directory", i+1, len(seen), s)
		}
	}
	if len(seen) == 0 {
		t.Fatalf("no container started while the subpath was swapped %d times; the race was never run", sw.n)
	}
	t.Logf("%d of 12 containers started, subpath swapped %d times", len(seen), sw.n)
}

// TestBindDenyHookAndStore: with an allowlist entry over hookPath's
// directory and readWrite, a pod must not get that directory (it could
// write beside the hook that runc runs as host root), nor the store through
// a bind mount of it below an allowed directory. Each refusal names the
// annotation, the item and the reason; a plain allowed directory still
// works, writable.
func TestBindDenyHookAndStore(t *testing.T) {
	bins := testBins(t)
	hookDir, allowed := t.TempDir(), t.TempDir()
	hook := filepath.Join(hookDir, "nri-volumes-hook")
	data, err := os.ReadFile(harness.HookBeside(bins.NRIVolumes))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hook, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"store", "ok"} {
		if err := os.Mkdir(filepath.Join(allowed, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{
		HookPath: hook,
		Extra:    fmt.Sprintf("bindMounts:\n  allowedHostPaths: [%q, %q]\n  readWrite: true\n", hookDir, allowed),
	})
	if err := unix.Mount(e.plugin.Root, filepath.Join(allowed, "store"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(allowed, "store"), unix.MNT_DETACH) })
	pod := e.cr.RunPod("deny", "default", "uid-deny", map[string]string{podKey: "- " + filepath.Join(allowed, "ok") + ":/x"})

	for i, tc := range []struct{ name, source string }{
		{"the hook's directory", hookDir},
		{"the hook", hook},
		{"a bind mount of the store", filepath.Join(allowed, "store")},
		{"the store's volumes through a bind mount", filepath.Join(allowed, "store", "volumes")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.cr.CreateContainer(pod, fmt.Sprintf("bad%d", i), appImage, map[string]string{podKey: "- " + tc.source + ":/x"}, nil)
			if err == nil {
				t.Fatalf("a container with a bind of %s was created", tc.source)
			}
			for _, want := range []string{podKey, "item 1", tc.source, "never allowed"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q: %v", want, err)
				}
			}
		})
	}
	if entries, err := os.ReadDir(hookDir); err != nil || len(entries) != 1 {
		t.Errorf("the hook's directory holds %v (%v), want the hook alone", entries, err)
	}
	id := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(id, "echo x > /x/f")
	if got, err := os.ReadFile(filepath.Join(allowed, "ok", "f")); err != nil || string(got) != "x\n" {
		t.Errorf("a writable bind of a plain allowed directory: f = %q, %v", got, err)
	}
}
