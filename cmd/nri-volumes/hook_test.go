package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nri-volumes/nri-volumes/volumes"
	"github.com/nri-volumes/nri-volumes/volumes/copyup"
)

// hookEnv is a fake bundle whose rootfs has image content, and a store.
type hookEnv struct {
	bundle, root string
	store        *volumes.Store
}

func newHookEnv(t *testing.T) *hookEnv {
	t.Helper()
	e := &hookEnv{bundle: t.TempDir(), root: t.TempDir()}
	for p, data := range map[string]string{
		"rootfs/data/hello.txt":     "hello",
		"rootfs/data/sub/nested":    "nested",
		"rootfs/etc/app/app.conf":   "conf",
		"rootfs/var/lib/empty/.dot": "",
	} {
		p = filepath.Join(e.bundle, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(e.bundle, "rootfs/data"), 999, 999); err != nil {
		t.Fatal(err)
	}
	store, err := volumes.Open(e.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e.store = store
	return e
}

func (e *hookEnv) create(t *testing.T, ns, name string) string {
	t.Helper()
	v, err := e.store.Create(ns, name, volumes.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v.Mountpoint
}

// run runs the hook as runc would, with the state of a container on stdin.
func (e *hookEnv) run(t *testing.T, args ...string) error {
	t.Helper()
	state, err := json.Marshal(specs.State{Version: specs.Version, ID: "ctr1", Status: specs.StateCreating, Pid: 42, Bundle: e.bundle})
	if err != nil {
		t.Fatal(err)
	}
	return runHookWithStdin(t, string(state), append([]string{"copyup", "--root", e.root}, args...))
}

func runHookWithStdin(t *testing.T, stdin string, args []string) error {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		w.WriteString(stdin)
		w.Close()
	}()
	defer r.Close()
	old := hookStdin
	hookStdin = r
	defer func() { hookStdin = old }()
	return hookCommand(args)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHookCopyUp(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "data")
	conf := e.create(t, "shop", "conf")
	missing := e.create(t, "default", "missing")

	err := e.run(t, "--volume", "default/data=/data", "--volume", "shop/conf=/etc/app/",
		"--volume", "default/missing=/no/such/dir", "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string][]string{
		data:    {".", "hello.txt", "sub", "sub/nested"},
		conf:    {".", "app.conf"},
		missing: {"."},
	} {
		if got := names(t, dir); !slices.Equal(got, want) {
			t.Errorf("%s: want %v, got %v", dir, want, got)
		}
	}
	if b, err := os.ReadFile(filepath.Join(data, "sub/nested")); err != nil || string(b) != "nested" {
		t.Errorf("sub/nested: %q, %v", b, err)
	}

	// The container restarts: the volume was filled once and is not again,
	// even when the user emptied it since.
	if err := os.Remove(filepath.Join(data, "hello.txt")); err != nil {
		t.Fatal(err)
	}
	if err := e.run(t, "--volume", "default/data=/data"); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, data), []string{".", "sub", "sub/nested"}; !slices.Equal(got, want) {
		t.Errorf("second run changed the volume: want %v, got %v", want, got)
	}
}

func TestHookOwnerOfData(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "data")
	if err := e.run(t, "--volume", "default/data=/data"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 999 {
		t.Errorf("_data owner: want 999 like the image's /data, got %d", uid)
	}
}

func TestHookLeavesFilledVolume(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "data")
	if err := os.WriteFile(filepath.Join(data, "mine"), []byte("user data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.run(t, "--volume", "default/data=/data"); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, data), []string{".", "mine"}; !slices.Equal(got, want) {
		t.Errorf("want %v, got %v", want, got)
	}
}

func TestHookLimitNamesVolume(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "data")
	err := e.run(t, "--max-files", "1", "--volume", "default/data=/data")
	if !errors.Is(err, copyup.ErrLimit) {
		t.Fatalf("want ErrLimit, got %v", err)
	}
	for _, s := range []string{"default/data", "/data", "MaxFiles"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	if got := names(t, data); !slices.Equal(got, []string{"."}) {
		t.Errorf("failed copy left %v", got)
	}
	// With the limit raised, the next start copies.
	if err := e.run(t, "--volume", "default/data=/data"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, data); len(got) != 4 {
		t.Errorf("retry copied %v", got)
	}
}

func TestHookBadInput(t *testing.T) {
	e := newHookEnv(t)
	e.create(t, "default", "data")
	goodState := `{"ociVersion":"1.2.0","id":"c","status":"creating","pid":1,"bundle":"` + e.bundle + `"}`
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"no hook", nil, goodState, "name the hook"},
		{"unknown hook", []string{"poststop"}, goodState, "unknown hook"},
		{"no root", []string{"copyup", "--volume", "default/data=/data"}, goodState, "--root"},
		{"relative root", []string{"copyup", "--root", "rel", "--volume", "default/data=/data"}, goodState, "absolute"},
		{"no volume", []string{"copyup", "--root", e.root}, goodState, "no --volume"},
		{"no target", []string{"copyup", "--root", e.root, "--volume", "default/data"}, goodState, "NAMESPACE/NAME=/target"},
		{"no namespace", []string{"copyup", "--root", e.root, "--volume", "data=/data"}, goodState, "NAMESPACE/NAME=/target"},
		{"bad name", []string{"copyup", "--root", e.root, "--volume", "default/../x=/data"}, goodState, "volume name"},
		{"bad namespace", []string{"copyup", "--root", e.root, "--volume", "a b/data=/data"}, goodState, "namespace"},
		{"relative target", []string{"copyup", "--root", e.root, "--volume", "default/data=data"}, goodState, "absolute"},
		{"negative limit", []string{"copyup", "--root", e.root, "--max-bytes", "-1", "--volume", "default/data=/data"}, goodState, "negative"},
		{"bad limit", []string{"copyup", "--root", e.root, "--max-files", "many", "--volume", "default/data=/data"}, goodState, "max-files"},
		{"extra argument", []string{"copyup", "--root", e.root, "--volume", "default/data=/data", "extra"}, goodState, "extra"},
		{"bad log level", []string{"copyup", "--root", e.root, "--log-level", "loud", "--volume", "default/data=/data"}, goodState, "log-level"},
		{"no state", []string{"copyup", "--root", e.root, "--volume", "default/data=/data"}, "", "parse OCI state"},
		{"bad state", []string{"copyup", "--root", e.root, "--volume", "default/data=/data"}, "{", "parse OCI state"},
		{"relative bundle", []string{"copyup", "--root", e.root, "--volume", "default/data=/data"}, `{"bundle":"b"}`, "bundle"},
		{"huge state", []string{"copyup", "--root", e.root, "--volume", "default/data=/data"},
			`{"annotations":{"a":"` + strings.Repeat("x", 2<<20) + `"}}`, "larger than"},
		{"unknown volume", []string{"copyup", "--root", e.root, "--volume", "default/other=/data"}, goodState, "default/other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runHookWithStdin(t, tc.stdin, tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestHookRefusesTerminal(t *testing.T) {
	tty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer tty.Close()
	old := hookStdin
	hookStdin = tty
	defer func() { hookStdin = old }()
	err = hookCommand([]string{"copyup", "--root", t.TempDir(), "--volume", "default/data=/data"})
	if err == nil || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("want a terminal error, got %v", err)
	}
}

// TestHookCopyUpTooBig copies more than a sized volume holds: the hook fails
// with a message naming the volume, its size and what it copied, and leaves
// the volume empty.
func TestHookCopyUpTooBig(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sized volumes need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	e := newHookEnv(t)
	big := make([]byte, 1<<20)
	for i := 0; i < 12; i++ {
		p := filepath.Join(e.bundle, "rootfs/big", "f"+strconv.Itoa(i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, big, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.store.Create("default", "small", volumes.CreateOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	vols, err := e.store.Acquire("ctr1", []volumes.Request{{Namespace: "default", Name: "small"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Release("ctr1") })
	err = e.run(t, "--volume", "default/small=/big")
	if err == nil {
		t.Fatal("copying 12 MiB into an 8 MiB volume succeeded")
	}
	for _, want := range []string{"default/small", "/big", "8MiB", "files (", "no space left on device"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	if got := names(t, vols[0].Mountpoint); !slices.Equal(got, []string{"."}) {
		t.Errorf("volume after the failed copy-up holds %v", got)
	}
}
