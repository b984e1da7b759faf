package hook

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
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
	e.writeSpec(t, &specs.Spec{Process: &specs.Process{User: specs.User{UID: 1000, GID: 1000}}})
	store, err := volumes.Open(e.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e.store = store
	return e
}

// writeSpec writes the bundle's config.json, as containerd does.
func (e *hookEnv) writeSpec(t *testing.T, spec *specs.Spec) {
	t.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.bundle, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
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
	return Run(args, r)
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
		{"no volume", []string{"copyup", "--root", e.root}, goodState, "no --volume or --chown"},
		{"bad chown", []string{"copyup", "--root", e.root, "--chown", "data"}, goodState, "NAMESPACE/NAME"},
		{"bad keep-owner", []string{"copyup", "--root", e.root, "--keep-owner", "default/../x", "--volume", "default/data=/data"}, goodState, "volume name"},
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
		{"bad image digest", []string{"copyup", "--root", e.root, "--image", "sha256:ABC", "--volume", "default/data=/data"}, goodState, `image digest "sha256:ABC"`},
		{"image digest without algorithm", []string{"copyup", "--root", e.root, "--image", strings.Repeat("a", 64), "--volume", "default/data=/data"}, goodState, "want sha256:"},
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
	err = Run([]string{"copyup", "--root", t.TempDir(), "--volume", "default/data=/data"}, tty)
	if err == nil || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("want a terminal error, got %v", err)
	}
}

// owner returns "UID:GID MODE" of path.
func owner(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d %o", st.Uid, st.Gid, fi.Mode().Perm())
}

// writeUserNamespaceSpec gives the container a user namespace that maps its
// ids 0-65535 to the host's 65536-131071, its process running as its root.
func (e *hookEnv) writeUserNamespaceSpec(t *testing.T) {
	t.Helper()
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 65536, Size: 65536}}
	e.writeSpec(t, &specs.Spec{
		Process: &specs.Process{User: specs.User{UID: 0, GID: 0}},
		Linux: &specs.Linux{
			Namespaces:  []specs.LinuxNamespace{{Type: specs.UserNamespace, Path: "/proc/1/ns/user"}},
			UIDMappings: ids, GIDMappings: ids,
		},
	})
}

// TestHookUserNamespace copies up for a container with a user namespace: its
// rootfs shows the image's ids shifted into the container's range, and the
// volume gets them back as the container sees them.
func TestHookUserNamespace(t *testing.T) {
	e := newHookEnv(t)
	e.writeUserNamespaceSpec(t)
	rootfs := filepath.Join(e.bundle, "rootfs")
	for p, id := range map[string]int{"data": 65536 + 999, "data/hello.txt": 65536, "data/sub": 65536 + 1000, "data/sub/nested": 1} {
		if err := os.Chown(filepath.Join(rootfs, p), id, id); err != nil {
			t.Fatal(err)
		}
	}
	data := e.create(t, "default", "data")
	if err := e.run(t, "--volume", "default/data=/data"); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		".": "999:999 755", "hello.txt": "0:0 644", "sub": "1000:1000 755",
		"sub/nested": "65534:65534 644", // outside the container's range: nobody, as the container saw it
	} {
		if got := owner(t, filepath.Join(data, p)); got != want {
			t.Errorf("%s: got %s, want %s", p, got, want)
		}
	}
}

// TestHookChown gives a volume's root to the container's user once: a later
// container with another user leaves it.
func TestHookChown(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "data")
	if err := e.run(t, "--volume", "default/data=/data", "--chown", "default/data"); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, data); got != "1000:1000 755" {
		t.Errorf("after the first chown _data is %s, want 1000:1000 755", got)
	}
	if got := names(t, data); len(got) != 4 {
		t.Errorf("copy-up did not happen before the chown: %v", got)
	}
	v, err := e.store.Get("default", "data")
	if err != nil {
		t.Fatal(err)
	}
	if v.Chowned == nil || *v.Chowned != (volumes.IDs{UID: 1000, GID: 1000}) {
		t.Errorf("volume.json records Chowned = %+v, want 1000:1000", v.Chowned)
	}
	e.writeSpec(t, &specs.Spec{Process: &specs.Process{User: specs.User{UID: 2000, GID: 2000}}})
	if err := e.run(t, "--chown", "default/data"); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, data); got != "1000:1000 755" {
		t.Errorf("a second container with U chowned again: %s", got)
	}
}

// TestHookKeepOwner: a volume created with an owner and mode keeps them when
// the image's directory is empty, and takes the image's when it has content.
func TestHookKeepOwner(t *testing.T) {
	e := newHookEnv(t)
	if err := os.MkdirAll(filepath.Join(e.bundle, "rootfs/empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	uid, gid, mode := 1234, 1234, uint32(0o770)
	opts := volumes.CreateOptions{UID: &uid, GID: &gid, Mode: &mode}
	for _, name := range []string{"empty", "full"} {
		if _, err := e.store.Create("default", name, opts); err != nil {
			t.Fatal(err)
		}
	}
	err := e.run(t, "--volume", "default/empty=/empty", "--keep-owner", "default/empty",
		"--volume", "default/full=/data", "--keep-owner", "default/full")
	if err != nil {
		t.Fatal(err)
	}
	if got := owner(t, filepath.Join(e.root, "volumes/default/empty/_data")); got != "1234:1234 770" {
		t.Errorf("volume over an empty image directory is %s, want its own 1234:1234 770", got)
	}
	if got := owner(t, filepath.Join(e.root, "volumes/default/full/_data")); got != "999:999 755" {
		t.Errorf("volume over the image's /data is %s, want the image's 999:999 755", got)
	}
}

// TestHookPodCopyUpBudget: the copy-ups of one pod's containers write at
// most --pod-max-bytes in all (limits.copyUpMaxSizePerPod); the copy-up that
// would pass it fails naming the key and leaves its volume untouched, and
// another pod has a budget of its own.
func TestHookPodCopyUpBudget(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "data") // /data: 11 bytes
	conf := e.create(t, "default", "conf") // /etc/app: 4 bytes
	other := e.create(t, "default", "other")
	budget := []string{"--pod", "pod1", "--pod-max-bytes", "13"}
	if err := e.run(t, append(budget, "--volume", "default/data=/data")...); err != nil {
		t.Fatal(err)
	}
	err := e.run(t, append(budget, "--volume", "default/conf=/etc/app")...)
	if !errors.Is(err, copyup.ErrLimit) || !strings.Contains(err.Error(), "limits.copyUpMaxSizePerPod") {
		t.Fatalf("second container of the pod: %v, want ErrLimit naming limits.copyUpMaxSizePerPod", err)
	}
	if got := names(t, conf); !slices.Equal(got, []string{"."}) {
		t.Errorf("the refused copy-up left %v", got)
	}
	if err := e.run(t, "--pod", "pod2", "--pod-max-bytes", "13", "--volume", "default/other=/etc/app"); err != nil {
		t.Errorf("another pod: %v", err)
	}
	if got := names(t, other); !slices.Equal(got, []string{".", "app.conf"}) {
		t.Errorf("another pod's volume: %v", got)
	}
	if got := names(t, data); len(got) != 4 {
		t.Errorf("first volume: %v", got)
	}
	// Once the pod is gone, its record goes too.
	if err := e.store.PodBudgets().Forget("pod1"); err != nil {
		t.Fatal(err)
	}
	if err := e.run(t, append(budget, "--volume", "default/conf=/etc/app")...); err != nil {
		t.Errorf("a pod with the same ID after its record was forgotten: %v", err)
	}
}

// TestHookCopiesOneDirectoryOnce: an image whose VOLUMEs all name one
// directory through symlinks gets it copied once per container, into the
// volume mounted last, not once per VOLUME.
func TestHookCopiesOneDirectoryOnce(t *testing.T) {
	e := newHookEnv(t)
	for _, l := range []string{"alias1", "alias2"} {
		if err := os.Symlink("/data", filepath.Join(e.bundle, "rootfs", l)); err != nil {
			t.Fatal(err)
		}
	}
	a, b, c := e.create(t, "default", "a"), e.create(t, "default", "b"), e.create(t, "default", "c")
	err := e.run(t, "--volume", "default/a=/data", "--volume", "default/b=/alias1", "--volume", "default/c=/alias2/")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, c); len(got) != 4 {
		t.Errorf("the volume mounted last holds %v, want the image's /data", got)
	}
	for _, dir := range []string{a, b} {
		if got := names(t, dir); !slices.Equal(got, []string{"."}) {
			t.Errorf("%s holds a second copy: %v", dir, got)
		}
	}
}

// TestHookCopyUpTooBig copies more than a sized volume holds: the hook fails
// with a message naming the volume, its size and what it copied, and leaves
// the volume empty.
func TestHookCopyUpTooBig(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
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
	vols, _, err := e.store.Acquire("ctr1", []volumes.Request{{Namespace: "default", Name: "small"}}, nil)
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

// TestHookSync: --sync makes a volume that the plugin made without fsyncs
// durable before the copy-up; a volume that is gone fails the hook, and so
// the container's start, with its name.
func TestHookSync(t *testing.T) {
	e := newHookEnv(t)
	vols, _, err := e.store.Acquire("ctr1", []volumes.Request{{Namespace: "default", Name: "data", PersistLater: true}}, nil)
	if err != nil || !vols[0].PersistLater {
		t.Fatalf("Acquire = %+v, %v; want an unsynced volume", vols, err)
	}
	if err := e.run(t, "--volume", "default/data=/data", "--sync", "default/data"); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, vols[0].Mountpoint), []string{".", "hello.txt", "sub", "sub/nested"}; !slices.Equal(got, want) {
		t.Errorf("want %v, got %v", want, got)
	}
	err = e.run(t, "--volume", "default/data=/data", "--sync", "default/gone")
	if err == nil || !strings.Contains(err.Error(), "--sync default/gone") || !errors.Is(err, volumes.ErrNotFound) {
		t.Errorf("--sync of a missing volume: %v", err)
	}
}

// TestHookRecordsCopyUps: the plugin's metrics see each copy the hook made
// and each that failed, with its reason; a volume already filled, or whose
// image directory is missing, is no copy-up. A log the hook cannot write
// does not fail the container's start.
func TestHookRecordsCopyUps(t *testing.T) {
	e := newHookEnv(t)
	r, err := e.store.CopyUpLog().NewReader()
	if err != nil {
		t.Fatal(err)
	}
	e.create(t, "default", "data") // /data: 2 files, 11 bytes
	e.create(t, "default", "conf") // /etc/app: 1 file, 4 bytes
	e.create(t, "default", "none")
	if err := e.run(t, "--volume", "default/data=/data", "--volume", "default/none=/missing"); err != nil {
		t.Fatal(err)
	}
	if err := e.run(t, "--volume", "default/data=/data"); err != nil { // filled already
		t.Fatal(err)
	}
	if err := e.run(t, "--max-bytes", "3", "--volume", "default/conf=/etc/app"); !errors.Is(err, copyup.ErrLimit) {
		t.Fatalf("copy-up past --max-bytes: %v", err)
	}
	if err := e.run(t, "--pod", "p", "--pod-max-bytes", "3", "--volume", "default/conf=/etc/app"); !errors.Is(err, copyup.ErrLimit) {
		t.Fatalf("copy-up past --pod-max-bytes: %v", err)
	}
	var got []volumes.CopyUpResult
	if err := r.Read(func(res volumes.CopyUpResult) { got = append(got, res) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("recorded %+v, want the copy of default/data and two failures", got)
	}
	if !got[0].OK() || got[0].Bytes != 11 || got[0].Files != 2 || got[0].Duration <= 0 {
		t.Errorf("the copy of default/data was recorded as %+v, want 11 bytes in 2 files", got[0])
	}
	if got[1].Reason != volumes.CopyUpLimit || got[2].Reason != volumes.CopyUpPodBudget {
		t.Errorf("failures recorded as %q and %q, want %q and %q", got[1].Reason, got[2].Reason, volumes.CopyUpLimit, volumes.CopyUpPodBudget)
	}

	// The log's name taken by a directory: recording fails, the copy-up not.
	log := filepath.Join(e.root, "volumes", ".copyup-stats")
	if err := os.Remove(log); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(log, 0o700); err != nil {
		t.Fatal(err)
	}
	e.create(t, "default", "late")
	if err := e.run(t, "--volume", "default/late=/data"); err != nil {
		t.Errorf("copy-up with an unwritable copy-up log: %v", err)
	}
}

// testImage is the config digest the hook tests give as --image.
const testImage = "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// volumeEntries lists the directory of volume ns/name: its _data, its
// metadata and the store's copy-up markers.
func (e *hookEnv) volumeEntries(t *testing.T, ns, name string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.root, "volumes", ns, name))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ent := range ents {
		out = append(out, ent.Name())
	}
	return out
}

// TestHookRecordsImageEmptyTargets: with --image, a target where the image
// has nothing to copy (nothing there, or the bare mount point runc makes)
// is recorded for the image, and its volume is marked done as it is; a
// target with content is copied and not recorded, and so is a second
// target that names the directory of another through a symlink.
func TestHookRecordsImageEmptyTargets(t *testing.T) {
	e := newHookEnv(t)
	rootfs := filepath.Join(e.bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "mnt/bare"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/mnt/bare", filepath.Join(rootfs, "baredup")); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(rootfs, "mnt/bare"), old, old); err != nil {
		t.Fatal(err)
	}
	missing := e.create(t, "default", "missing")
	bare := e.create(t, "default", "bare")
	e.create(t, "default", "dupe")
	data := e.create(t, "default", "data")
	before, err := os.Stat(bare)
	if err != nil {
		t.Fatal(err)
	}
	// Volumes are filled last to first: default/bare before default/dupe.
	err = e.run(t, "--image", testImage, "--volume", "default/missing=/no/such/dir", "--volume", "default/data=/data",
		"--volume", "default/dupe=/baredup", "--volume", "default/bare=/mnt/bare")
	if err != nil {
		t.Fatal(err)
	}
	digestHex := strings.TrimPrefix(testImage, "sha256:")
	for target, want := range map[string]bool{"/no/such/dir": true, "/mnt/bare": true, "/data": false, "/baredup": false} {
		got, err := e.store.EmptyTargets().Has(digestHex, target)
		if err != nil || got != want {
			t.Errorf("image target %s recorded empty: %t, %v; want %t", target, got, err, want)
		}
	}
	for _, name := range []string{"missing", "bare", "dupe", "data"} {
		if got, want := e.volumeEntries(t, "default", name), []string{"_data", "copyup-done", "volume.json"}; !slices.Equal(got, want) {
			t.Errorf("volume %s holds %v, want %v", name, got, want)
		}
	}
	for _, dir := range []string{missing, bare} {
		if got := names(t, dir); !slices.Equal(got, []string{"."}) {
			t.Errorf("%s: %v, want it empty", dir, got)
		}
		if got := owner(t, dir); got != "0:0 755" {
			t.Errorf("%s: %s, want 0:0 755", dir, got)
		}
	}
	// Marked, not copied: a copy would have given _data the times of the
	// mount point.
	if after, err := os.Stat(bare); err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("_data over a bare mount point: modified %v, want %v as before (%v)", after.ModTime(), before.ModTime(), err)
	}
	if got := names(t, data); len(got) != 4 || owner(t, data) != "999:999 755" {
		t.Errorf("the image's /data was not copied: %v, %s", got, owner(t, data))
	}
	for _, name := range []string{"missing", "bare"} {
		if need, err := needsCopyUp(e.store.CopyUps().Status("default", name)); err != nil || need {
			t.Errorf("volume %s needs copy-up: %t, %v; want it done", name, need, err)
		}
	}

	// Without --image nothing is recorded, and the volume is done all the same.
	e.create(t, "default", "plain")
	if err := e.run(t, "--volume", "default/plain=/also/missing"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.store.EmptyTargets().Has(digestHex, "/also/missing"); err != nil || got {
		t.Errorf("recorded without --image: %t, %v", got, err)
	}
	if got, want := e.volumeEntries(t, "default", "plain"), []string{"_data", "copyup-done", "volume.json"}; !slices.Equal(got, want) {
		t.Errorf("volume plain holds %v, want %v", got, want)
	}
}

// TestHookNothingToCopyFinishesInterruptedCopy: a volume whose copy-up was
// cut short (its started marker and a half-filled staging directory left)
// is cleaned up by a hook that finds nothing to copy, as by any other.
func TestHookNothingToCopyFinishesInterruptedCopy(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "cut")
	volDir := filepath.Dir(data)
	if err := os.WriteFile(filepath.Join(volDir, "copyup-started"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(volDir, ".nri-volumes-copyup/half"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := e.run(t, "--image", testImage, "--volume", "default/cut=/no/such/dir"); err != nil {
		t.Fatal(err)
	}
	if got, want := e.volumeEntries(t, "default", "cut"), []string{"_data", "copyup-done", "volume.json"}; !slices.Equal(got, want) {
		t.Errorf("volume holds %v, want %v", got, want)
	}
	if got := names(t, data); !slices.Equal(got, []string{"."}) {
		t.Errorf("_data: %v, want it empty", got)
	}
}

// TestHookBareMountPointOverOwnedVolume: a volume whose _data is no longer
// root's 0755 (and that keeps no owner) takes the owner and mode of the bare
// mount point, as a copy gives them.
func TestHookBareMountPointOverOwnedVolume(t *testing.T) {
	e := newHookEnv(t)
	if err := os.MkdirAll(filepath.Join(e.bundle, "rootfs/mnt/bare"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := e.create(t, "default", "v")
	if err := os.Chown(data, 5, 5); err != nil {
		t.Fatal(err)
	}
	if err := e.run(t, "--image", testImage, "--volume", "default/v=/mnt/bare"); err != nil {
		t.Fatal(err)
	}
	if got := owner(t, data); got != "0:0 755" {
		t.Errorf("_data: %s, want the mount point's 0:0 755", got)
	}
}

// TestHookRecordsNoTargetOnAnotherMount: a target that is a mount point on
// the host (something else, such as an earlier hook, mounted there in the
// rootfs) is no part of the image, so the hook copies nothing from it; but
// what the image holds beneath is unknown, so nothing is recorded for the
// image there: a later container of the image, without that mount, must
// still get its copy.
func TestHookRecordsNoTargetOnAnotherMount(t *testing.T) {
	testutil.RequireRoot(t, "needs root to mount")
	e := newHookEnv(t)
	target := filepath.Join(e.bundle, "rootfs/mnt/covered")
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "from-image"), []byte("image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", target, "tmpfs", 0, "mode=755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(target, syscall.MNT_DETACH) })
	e.create(t, "default", "covered")
	if err := e.run(t, "--image", testImage, "--volume", "default/covered=/mnt/covered"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.store.EmptyTargets().Has(strings.TrimPrefix(testImage, "sha256:"), "/mnt/covered"); err != nil || got {
		t.Errorf("a target on another mount recorded empty for the image: %t, %v; want not recorded", got, err)
	}
}

// TestHookRecordsNothingUnderUserNamespace: with a user namespace the hook
// judges a bare mount point on ids mapped back, which a rootfs that is not
// shifted would fool, so it records no empty target for the image; the
// volume is still marked done.
func TestHookRecordsNothingUnderUserNamespace(t *testing.T) {
	e := newHookEnv(t)
	e.writeUserNamespaceSpec(t)
	e.create(t, "default", "missing")
	if err := e.run(t, "--image", testImage, "--volume", "default/missing=/no/such/dir"); err != nil {
		t.Fatal(err)
	}
	if got, err := e.store.EmptyTargets().Has(strings.TrimPrefix(testImage, "sha256:"), "/no/such/dir"); err != nil || got {
		t.Errorf("recorded from a container with a user namespace: %t, %v", got, err)
	}
	if need, err := needsCopyUp(e.store.CopyUps().Status("default", "missing")); err != nil || need {
		t.Errorf("volume needs copy-up: %t, %v; want it done", need, err)
	}
}

// needsCopyUp reports whether a container that mounts the volume needs the
// copy-up hook, for tests that ask only that of CopyUpStatus.
func needsCopyUp(st volumes.CopyUpStatus, err error) (bool, error) { return st.Needed, err }
