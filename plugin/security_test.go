package plugin_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/internal/fsx"

	"github.com/containerd/nri/pkg/api"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// secHost is the part of the host a hostile pod aims at: an allowed bind
// directory with links out of it, and an outside directory with data.
type secHost struct {
	allowed string // in bindMounts.allowedHostPaths
	outside string // not
}

func newSecHost(t *testing.T) secHost {
	t.Helper()
	h := secHost{allowed: t.TempDir(), outside: t.TempDir()}
	for _, d := range []string{filepath.Join(h.allowed, "ok"), filepath.Join(h.outside, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(h.outside, "sub", "precious"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"etc-link": "/etc", "out-link": h.outside, "root-link": "/"} {
		if err := os.Symlink(target, filepath.Join(h.allowed, link)); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// expand fills in $ALLOWED, $OUT, $BASE_OUT (the outside directory's name)
// and $RT (the runtime's directory, which holds the store and containerd's
// root).
func (h secHost) expand(s string, rt *runtime) string {
	return strings.NewReplacer("$ALLOWED", h.allowed, "$OUT", h.outside, "$RT", filepath.Dir(rt.cfg.Root),
		"$BASE_OUT", filepath.Base(h.outside)).Replace(s)
}

// sameFile reports whether the paths name one file, through mounts.
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(sa, sb)
}

// storeIsEmpty fails if the store holds any volume or namespace.
func storeIsEmpty(t *testing.T, rt *runtime) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(rt.cfg.Root, "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			t.Errorf("store has %q after a refused creation", e.Name())
		}
	}
}

// secAliasAmplification is a 64 KiB annotation whose one anchored 32 KB
// scalar is referenced 10,000 times: the YAML parser's aliasing check lets it
// through (each alias is one node), and converting it to JSON builds ~320 MB.
var secAliasAmplification = "[&a " + strings.Repeat("x", 32000) + ", " + strings.Repeat("*a,", 10000) + "*a]"

func TestUntrustedAnnotations(t *testing.T) {
	billionLaughs := "- &a [x,x,x,x,x,x,x,x,x]\n- &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n- &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" +
		"- &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n- &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n- &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n" +
		"- &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n- &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
	deepFlow := "- {type: volume, source: v, target: /x, labels: " + strings.Repeat("{a: ", 12) + "b" + strings.Repeat("}", 12) + "}"
	deepBlock := "- target: /x\n  labels:\n"
	for i := 2; i < 14; i++ {
		deepBlock += strings.Repeat("  ", i) + "a:\n"
	}
	tests := []struct {
		name       string
		annotation string
		// wantErr is a part of the error; empty for a creation that succeeds.
		wantErr string
		check   func(t *testing.T, h secHost, adj *api.ContainerAdjustment)
	}{
		// Bind sources that leave the allowed directory.
		{name: "bind through a symlink to /etc", annotation: "- $ALLOWED/etc-link:/x", wantErr: "/etc"},
		{name: "bind through a symlink to /", annotation: "- $ALLOWED/root-link/etc:/x", wantErr: "symlink"},
		{name: "bind through a symlink outside", annotation: "- $ALLOWED/out-link/sub:/x", wantErr: "symlink"},
		{name: "bind with ..", annotation: "- $ALLOWED/../../../../etc:/x", wantErr: "outside bindMounts.allowedHostPaths"},
		{name: "bind with .. inside the allowed dir", annotation: "- $ALLOWED/ok/../../$BASE_OUT/sub:/x", wantErr: "outside bindMounts.allowedHostPaths"},
		{name: "bind of the store", annotation: "- $RT/store/volumes:/x", wantErr: "never allowed"},
		{name: "bind above the store", annotation: "- $RT:/x", wantErr: "never allowed"},
		{name: "bind of containerd's root", annotation: "- $RT/containerd:/x", wantErr: "never allowed"},
		{name: "bind source with mount options", annotation: "- $ALLOWED/ok,exec:/x", wantErr: "forbidden character"},
		{name: "bind long syntax relative", annotation: "- {type: bind, source: ok, target: /x}", wantErr: "not an absolute host path"},
		{name: "bind missing", annotation: "- $ALLOWED/nope:/x", wantErr: "no such file"},
		{name: "bind allowed", annotation: "- $ALLOWED/ok:/x", check: func(t *testing.T, h secHost, adj *api.ContainerAdjustment) {
			m := findMount(adj, "/x")
			if m == nil || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "rro") || !slices.Contains(m.Options, "nosuid") {
				t.Fatalf("bind mount = %+v, want a recursively read-only nosuid bind", m)
			}
			if !sameFile(t, m.Source, filepath.Join(h.allowed, "ok")) {
				t.Errorf("bind mount source %s does not show %s/ok", m.Source, h.allowed)
			}
		}},
		// tmpfs sizes and modes.
		{name: "tmpfs size 0", annotation: "- {type: tmpfs, target: /t, size: 0}", wantErr: "must be positive"},
		{name: "tmpfs size negative", annotation: "- {type: tmpfs, target: /t, size: -1Mi}", wantErr: "size"},
		{name: "tmpfs size above max", annotation: "- {type: tmpfs, target: /t, size: 2Gi}", wantErr: "above the maximum"},
		{name: "tmpfs size huge", annotation: "- {type: tmpfs, target: /t, size: 8388608Ti}", wantErr: "size"},
		{name: "tmpfs size in an unknown unit", annotation: "- {type: tmpfs, target: /t, size: 1Ei}", wantErr: "size"},
		{name: "tmpfs size overflows", annotation: "- {type: tmpfs, target: /t, size: 99999999999999999999Ei}", wantErr: "size"},
		{name: "tmpfs size injects options", annotation: "- {type: tmpfs, target: /t, size: '1Mi,exec,suid'}", wantErr: "size"},
		{name: "tmpfs mode injects options", annotation: "- {type: tmpfs, target: /t, mode: '1777,exec'}", wantErr: "mode"},
		{name: "tmpfs mode too big", annotation: "- {type: tmpfs, target: /t, mode: '17777'}", wantErr: "mode"},
		{name: "tmpfs under /proc", annotation: "- {type: tmpfs, target: /proc/sys}", wantErr: "under /proc"},
		{name: "tmpfs with a source", annotation: "- {type: tmpfs, source: /etc, target: /t}", wantErr: "no source"},
		{name: "tmpfs sized", annotation: "- {type: tmpfs, target: /t, size: 8Mi}", check: func(t *testing.T, h secHost, adj *api.ContainerAdjustment) {
			m := findMount(adj, "/t")
			if m == nil || m.Type != "tmpfs" || !slices.Contains(m.Options, "size=8388608") || !slices.Contains(m.Options, "nosuid") ||
				slices.Contains(m.Options, "exec") || slices.Contains(m.Options, "suid") {
				t.Errorf("tmpfs mount = %+v", m)
			}
		}},
		// Documents that try to make the parser spend time or memory.
		{name: "annotation above 64 KiB", annotation: "- /a\n#" + strings.Repeat("x", 64<<10), wantErr: "bytes"},
		{name: "deep flow nesting", annotation: deepFlow, wantErr: "nests"},
		{name: "deep block nesting", annotation: deepBlock, wantErr: "nests"},
		{name: "billion laughs", annotation: billionLaughs, wantErr: "alias"},
		{name: "self-referencing alias", annotation: "- &a [*a]", wantErr: plugin.VolumesKey},
		{name: "alias amplification of a scalar", annotation: secAliasAmplification, wantErr: "aliases are not allowed"},
		{name: "257 items", annotation: strings.Repeat("- /a\n", 257), wantErr: "items"},
		// Keys.
		{name: "unknown key", annotation: "- {target: /a, sourc: v}", wantErr: "unknown field"},
		{name: "duplicate key", annotation: "- {target: /a, target: /etc}", wantErr: `key "target" already set`},
		{name: "duplicate target", annotation: "- v:/a\n- w:/a/", wantErr: "already used"},
		{name: "name traversal", annotation: "- ../../etc:/a", wantErr: "../../etc"},
		{name: "name with a slash in long syntax", annotation: "- {source: a/b, target: /a}", wantErr: "a/b"},
		{name: "relative target", annotation: "- v:data", wantErr: "not an absolute path"},
		{name: "target /", annotation: "- v:/", wantErr: "cannot be /"},
		{name: "target under /proc by ..", annotation: "- v:/x/../proc/1", wantErr: "under /proc"},
		{name: "target with a newline", annotation: "- \"v:/a\\nb\"", wantErr: "forbidden character"},
		{name: "NUL byte", annotation: "- \"v:/a\x00\"", wantErr: "NUL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newSecHost(t)
			rt := newRuntime(t, func(c *config.Config) {
				c.BindMounts.AllowedHostPaths = []string{h.allowed, filepath.Dir(c.Root)}
			})
			rt.connect()
			if err := os.MkdirAll(rt.cfg.ContainerdRoot, 0o755); err != nil {
				t.Fatal(err)
			}
			beforeAllowed, beforeOutside := fstree.Snapshot(t, h.allowed), fstree.Snapshot(t, h.outside)
			key := plugin.VolumesKey + "/pod"
			pod := newPod("p1", "default", map[string]string{key: h.expand(tc.annotation, rt)})
			adj, err := rt.create(pod, newContainer("c1", "p1", "app"))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("CreateContainer: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("CreateContainer succeeded with mounts %+v, want an error with %q", adj.GetMounts(), tc.wantErr)
			case tc.wantErr != "":
				if msg := err.Error(); !strings.Contains(msg, h.expand(tc.wantErr, rt)) || !strings.Contains(msg, key) {
					t.Errorf("error %q does not name the annotation %s and %q", msg, key, tc.wantErr)
				}
				storeIsEmpty(t, rt)
			default:
				tc.check(t, h, adj)
			}
			if after := fstree.Snapshot(t, h.allowed); !maps.Equal(beforeAllowed, after) {
				t.Errorf("the allowed directory changed: %v -> %v", beforeAllowed, after)
			}
			if after := fstree.Snapshot(t, h.outside); !maps.Equal(beforeOutside, after) {
				t.Errorf("the outside directory changed: %v -> %v", beforeOutside, after)
			}
		})
	}
}

func TestUntrustedImageConfig(t *testing.T) {
	doc := func(volumes string) string {
		return `{"architecture":"amd64","os":"linux","config":{"Volumes":{` + volumes + `}}}`
	}
	tests := []struct {
		name string
		// digest makes the digest the container names.
		digest  func(rt *runtime) string
		wantErr string
		// wantTarget is the one mount a good config makes.
		wantTarget string
	}{
		{name: "VOLUME /../../etc is /etc in the container", wantTarget: "/etc",
			digest: func(rt *runtime) string { return rt.writeImageConfig(doc(`"/../../etc":{}`)) }},
		{name: "VOLUME with a trailing slash", wantTarget: "/data",
			digest: func(rt *runtime) string { return rt.writeImageConfig(doc(`"/data/":{}`)) }},
		{name: "relative VOLUME", wantErr: "not an absolute path",
			digest: func(rt *runtime) string { return rt.writeImageConfig(doc(`"data":{}`)) }},
		{name: "VOLUME under /proc", wantErr: "under /proc",
			digest: func(rt *runtime) string { return rt.writeImageConfig(doc(`"/proc/sys/kernel":{}`)) }},
		{name: "VOLUME /", wantErr: "cannot be /",
			digest: func(rt *runtime) string { return rt.writeImageConfig(doc(`"/..":{}`)) }},
		{name: "VOLUME with a NUL", wantErr: "forbidden character",
			digest: func(rt *runtime) string { return rt.writeImageConfig(doc(`"/a\u0000b":{}`)) }},
		{name: "blob does not match its digest", wantErr: "does not match its digest",
			digest: func(rt *runtime) string {
				d := rt.writeImageConfig(doc(`"/data":{}`))
				blob := filepath.Join(rt.cfg.ContainerdRoot, "io.containerd.content.v1.content", "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
				if err := os.WriteFile(blob, []byte(doc(`"/other":{}`)), 0o644); err != nil {
					rt.t.Fatal(err)
				}
				return d
			}},
		{name: "blob is a symlink", wantErr: "content store",
			digest: func(rt *runtime) string {
				d := rt.writeImageConfig(doc(`"/data":{}`))
				blob := filepath.Join(rt.cfg.ContainerdRoot, "io.containerd.content.v1.content", "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
				if err := os.Rename(blob, blob+".real"); err != nil {
					rt.t.Fatal(err)
				}
				if err := os.Symlink(blob+".real", blob); err != nil {
					rt.t.Fatal(err)
				}
				return d
			}},
		{name: "digest with ../", wantErr: "not a sha256 digest",
			digest: func(*runtime) string { return "sha256:../../../../../etc/passwd" }},
		{name: "digest of another algorithm", wantErr: "not a sha256 digest",
			digest: func(*runtime) string { return "sha512:" + strings.Repeat("a", 128) }},
		{name: "digest upper case", wantErr: "not a sha256 digest",
			digest: func(*runtime) string { return "sha256:" + strings.Repeat("A", 64) }},
		{name: "digest of a missing blob", wantErr: "content store",
			digest: func(*runtime) string { return "sha256:" + strings.Repeat("a", 64) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, nil)
			rt.connect()
			if err := os.MkdirAll(rt.cfg.ContainerdRoot, 0o755); err != nil {
				t.Fatal(err)
			}
			rtDir := filepath.Dir(rt.cfg.Root)
			ctr := newContainer("c1", "p1", "app")
			ctr.Image = &api.Image{Name: "localhost/hostile:1", ConfigDigest: tc.digest(rt)}
			before := fstree.Snapshot(t, rt.cfg.ContainerdRoot)
			adj, err := rt.create(newPod("p1", "default", nil), ctr)
			if after := fstree.Snapshot(t, rt.cfg.ContainerdRoot); !maps.Equal(before, after) {
				t.Errorf("containerd's root changed: %v -> %v", before, after)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "localhost/hostile:1") {
					t.Fatalf("CreateContainer = %v, want an error naming the image and %q", err, tc.wantErr)
				}
				storeIsEmpty(t, rt)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(adj.GetMounts()) != 1 {
				t.Fatalf("mounts = %+v, want one at %s", adj.GetMounts(), tc.wantTarget)
			}
			m := findMount(adj, tc.wantTarget)
			prefix := filepath.Join(rt.cfg.Root, "volumes", "default") + "/"
			if m == nil || m.Type != "bind" || !strings.HasPrefix(m.Source, prefix) || !strings.HasSuffix(m.Source, "/_data") {
				t.Fatalf("mount %s = %+v, want a bind of a volume below %s", tc.wantTarget, m, prefix)
			}
			vols, err := rt.store().List(volumes.ListOptions{AllNamespaces: true})
			if err != nil || len(vols) != 1 || vols[0].Owner == nil || vols[0].Owner.Target != tc.wantTarget || vols[0].Mountpoint != m.Source {
				t.Fatalf("store = %+v, %v; want one anonymous volume for %s", vols, err, tc.wantTarget)
			}
			// Nothing was made beside the store, the content store and the socket.
			entries, _ := os.ReadDir(rtDir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if want := []string{"conf.d", "containerd", "nri.sock", "plugins", "store"}; !slices.Equal(names, want) {
				t.Errorf("runtime directory holds %v, want %v", names, want)
			}
		})
	}
}

// TestUntrustedPodNamespace checks that a namespace that is not a valid name
// never reaches the store.
func TestUntrustedPodNamespace(t *testing.T) {
	for _, ns := range []string{"../x", "..", "a/b", "x\ny", strings.Repeat("n", 64)} {
		t.Run(ns, func(t *testing.T) {
			rt := newRuntime(t, nil)
			rt.connect()
			pod := newPod("p1", ns, map[string]string{plugin.VolumesKey: "- v:/a\n- /b"})
			if _, err := rt.create(pod, newContainer("c1", "p1", "app")); err == nil || !strings.Contains(err.Error(), "namespace") {
				t.Fatalf("CreateContainer in namespace %q = %v, want an error naming the namespace", ns, err)
			}
			storeIsEmpty(t, rt)
			if entries, _ := os.ReadDir(rt.cfg.Root); len(entries) != 1 {
				t.Errorf("store root holds %d entries, want only volumes/", len(entries))
			}
		})
	}
}

// TestBindDenyListResolved checks that the paths that are never bound are
// compared after resolving their symlinks: a store or a containerd root
// reached through a symlink (a bigger disk linked in) is refused under its
// real path too.
func TestBindDenyListResolved(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	for _, d := range []string{"store", "containerd", "other"} {
		if err := os.MkdirAll(filepath.Join(disk, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"store-link": "disk/store", "containerd-link": "disk/containerd"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	rt := newRuntime(t, func(c *config.Config) {
		c.Root = filepath.Join(dir, "store-link")
		c.ContainerdRoot = filepath.Join(dir, "containerd-link")
		c.BindMounts.AllowedHostPaths = []string{disk}
	})
	rt.connect()
	key := plugin.VolumesKey + "/pod"
	for i, tc := range []struct {
		source string
		ok     bool
	}{
		{source: filepath.Join(disk, "store", "volumes")},
		{source: filepath.Join(disk, "store")},
		{source: filepath.Join(disk, "containerd")},
		{source: disk},
		{source: filepath.Join(disk, "other"), ok: true},
	} {
		t.Run(tc.source, func(t *testing.T) {
			id := fmt.Sprintf("c%d", i)
			pod := newPod("p1", "default", map[string]string{key: "- " + tc.source + ":/x"})
			adj, err := rt.create(pod, newContainer(id, "p1", "app"))
			if tc.ok {
				if err != nil || findMount(adj, "/x") == nil {
					t.Fatalf("CreateContainer = %v, %v; want a bind mount at /x", adj, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CreateContainer with a bind of %s succeeded with mounts %+v", tc.source, adj.GetMounts())
			}
			if msg := err.Error(); !strings.Contains(msg, "never allowed") || !strings.Contains(msg, key) || !strings.Contains(msg, tc.source) {
				t.Errorf("error %q does not name %s, the source and why", msg, key)
			}
		})
	}
}

// TestAnonymousShapedNames checks that a named volume cannot take the shape
// of an anonymous volume's name (64 hex characters), which would give it that
// anonymous volume's data, in either syntax.
func TestAnonymousShapedNames(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	owner := volumes.Owner{PodSandboxID: "p1", Container: "app", Target: "/cache"}
	anon := volumes.AnonymousName(owner)
	// The anonymous volume exists and holds data another container wrote.
	store := rt.store()
	vols, _, err := store.Acquire("writer", []volumes.Request{{Namespace: "default", Owner: &owner}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, "secret"), []byte("anonymous data"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := plugin.VolumesKey + "/pod"
	for i, value := range []string{
		"- " + anon + ":/data",
		"- {source: " + anon + ", target: /data}",
		"- " + strings.ToUpper(anon) + ":/data",
	} {
		t.Run(value, func(t *testing.T) {
			pod := newPod("p2", "default", map[string]string{key: value})
			adj, err := rt.create(pod, newContainer(fmt.Sprintf("thief%d", i), "p2", "app"))
			if err == nil {
				t.Fatalf("CreateContainer succeeded with mounts %+v", adj.GetMounts())
			}
			if msg := err.Error(); !strings.Contains(msg, key) || !strings.Contains(msg, "item 1") || !strings.Contains(msg, "anonymous") {
				t.Errorf("error %q does not name %s, the item and that the name is an anonymous volume's", msg, key)
			}
		})
	}
	v, err := store.Get("default", anon)
	if err != nil || !slices.Equal(v.UsedBy, []string{"writer"}) {
		t.Errorf("anonymous volume after the refused creations: %+v, %v; want used by writer only", v, err)
	}
}

// TestBindDenyByIdentity checks that what runc runs as host root (the hook,
// the plugin's own binary) and the store are refused as bind sources by what
// they are, not by how the path reads: an allowlist entry over the hook's
// directory with readWrite must not hand a pod that directory, and a bind
// mount of the store below an allowed directory must not hand a pod the
// store. A mount below an allowed entry is refused unless it is an entry too.
func TestBindDenyByIdentity(t *testing.T) {
	dir := t.TempDir()
	hookDir, allowed, own := filepath.Join(dir, "bin"), filepath.Join(dir, "allowed"), filepath.Join(dir, "own")
	hookBind, nested := filepath.Join(dir, "bin-bind"), filepath.Join(allowed, "conf", "sub")
	for _, d := range []string{hookDir, filepath.Join(allowed, "store"), filepath.Join(allowed, "tmp"), filepath.Join(allowed, "ok"), own, hookBind, nested} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hook := filepath.Join(hookDir, "nri-volumes-hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, func(c *config.Config) {
		c.HookPath = hook
		c.BindMounts.ReadWrite = true
		c.BindMounts.AllowedHostPaths = []string{hookDir, filepath.Dir(exe), allowed, own, hookBind}
	})
	rt.connect()
	mount := func(src, dst, fstype string, flags uintptr) {
		if err := unix.Mount(src, dst, fstype, flags, ""); err != nil {
			t.Fatalf("mount %s at %s: %v", src, dst, err)
		}
		t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
	}
	mount(rt.cfg.Root, filepath.Join(allowed, "store"), "", unix.MS_BIND)
	mount("tmpfs", filepath.Join(allowed, "tmp"), "tmpfs", 0)
	mount("tmpfs", own, "tmpfs", 0)
	mount(hookDir, hookBind, "", unix.MS_BIND)
	mount(filepath.Join(rt.cfg.Root, "volumes"), nested, "", unix.MS_BIND)
	key := plugin.VolumesKey + "/pod"
	for i, tc := range []struct {
		name, source, wantErr string
	}{
		{name: "the hook's directory", source: hookDir, wantErr: "never allowed"},
		{name: "the hook", source: hook, wantErr: "never allowed"},
		{name: "a bind mount of the hook's directory", source: hookBind, wantErr: "never allowed"},
		{name: "the hook through a bind mount", source: filepath.Join(hookBind, "nri-volumes-hook"), wantErr: "never allowed"},
		{name: "the plugin's binary", source: exe, wantErr: "never allowed"},
		{name: "the plugin binary's directory", source: filepath.Dir(exe), wantErr: "never allowed"},
		{name: "a bind mount of the store", source: filepath.Join(allowed, "store"), wantErr: "never allowed"},
		{name: "below a bind mount of the store", source: filepath.Join(allowed, "store", "volumes"), wantErr: "never allowed"},
		{name: "a bind mount of the store below the source", source: filepath.Join(allowed, "conf"), wantErr: "never allowed"},
		{name: "another mount below the allowed entry", source: filepath.Join(allowed, "tmp"), wantErr: "another mount"},
		{name: "a mount that is an allowed entry itself", source: own},
		{name: "a plain directory", source: filepath.Join(allowed, "ok")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("c%d", i)
			pod := newPod("p1", "default", map[string]string{key: "- " + tc.source + ":/x"})
			adj, err := rt.create(pod, newContainer(id, "p1", "app"))
			if tc.wantErr == "" {
				if err != nil || findMount(adj, "/x") == nil {
					t.Fatalf("CreateContainer = %v, %v; want a bind mount at /x", adj, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CreateContainer with a bind of %s succeeded with mounts %+v", tc.source, adj.GetMounts())
			}
			for _, want := range []string{key, "item 1", tc.source, tc.wantErr} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not name %q", err, want)
				}
			}
		})
	}
}

// TestBindMountsBelowRenamedSource checks that the mounts below a bind
// source are checked on what is pinned, not on what its path names: a pod
// with a writable bind above the source can rename the source away right
// after the walk opened it and leave an empty decoy at its name, so that
// nothing is listed below the path, while the pin, a recursive clone of the
// object the walk opened, would carry the denied mount below it.
func TestBindMountsBelowRenamedSource(t *testing.T) {
	dir := t.TempDir()
	srv, hookDir := filepath.Join(dir, "srv"), filepath.Join(dir, "bin")
	chroot, moved := filepath.Join(srv, "chroot"), filepath.Join(srv, "x")
	for _, d := range []string{hookDir, filepath.Join(chroot, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hook := filepath.Join(hookDir, "nri-volumes-hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, func(c *config.Config) {
		c.HookPath = hook
		c.BindMounts.ReadWrite = true
		c.BindMounts.AllowedHostPaths = []string{srv}
	})
	rt.connect()
	if err := unix.Mount(hookDir, filepath.Join(chroot, "bin"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsx.UnmountUnder(dir); err != nil {
			t.Error(err)
		}
	})
	// Without the rename, the look by path refuses the source.
	key := plugin.VolumesKey + "/pod"
	pod := newPod("p1", "default", map[string]string{key: "- " + chroot + ":/x"})
	if _, err := rt.create(pod, newContainer("c0", "p1", "app")); err == nil || !strings.Contains(err.Error(), "never allowed") {
		t.Fatalf("CreateContainer with a bind of %s = %v; want it refused", chroot, err)
	}
	defer plugin.SetAfterBindWalk(func(real string) {
		if real != chroot {
			return
		}
		if err := os.Rename(chroot, moved); err != nil {
			t.Error(err)
		}
		if err := os.Mkdir(chroot, 0o755); err != nil {
			t.Error(err)
		}
	})()
	adj, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err == nil {
		t.Fatalf("CreateContainer with a bind of %s renamed under the check succeeded with mounts %+v", chroot, adj.GetMounts())
	}
	for _, want := range []string{key, "item 1", filepath.Join(chroot, "bin"), "never allowed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	pins, err := fsx.MountsUnder(filepath.Join(rt.cfg.Root, "pins"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 0 {
		t.Errorf("mounts left in the store's pins after the refusal: %q", pins)
	}
}
