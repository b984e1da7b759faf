package plugin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// runtime is NRI's own runtime side, listening on a real socket, with the
// plugin connected to it as containerd would have it.
type runtime struct {
	t      testing.TB
	nri    *adaptation.Adaptation
	cfg    *config.Config
	socket string
	// pods and ctrs are what the runtime reports on Synchronize.
	pods []*api.PodSandbox
	ctrs []*api.Container
	// synced gets the result of each Synchronize.
	synced chan error
}

func newRuntime(t testing.TB, mutate func(*config.Config)) *runtime {
	t.Helper()
	if os.Getenv("NRI_VOLUMES_TEST_LOG") == "" {
		// NRI's runtime side logs every connection to the standard logger.
		logrus.StandardLogger().SetOutput(io.Discard)
	}
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Root = filepath.Join(dir, "store")
	t.Cleanup(func() { removePins(t, cfg.Root) })
	cfg.ContainerdRoot = filepath.Join(dir, "containerd")
	cfg.HookPath = "/usr/local/bin/nri-volumes"
	if mutate != nil {
		mutate(cfg)
	}
	rt := &runtime{t: t, cfg: cfg, socket: filepath.Join(dir, "nri.sock"), synced: make(chan error, 4)}
	for _, d := range []string{"plugins", "conf.d"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	nri, err := adaptation.New("containerd-test", "v2.4.2",
		func(ctx context.Context, cb adaptation.SyncCB) error {
			_, err := cb(ctx, rt.pods, rt.ctrs)
			rt.synced <- err
			return err
		},
		func(context.Context, []*adaptation.ContainerUpdate) ([]*adaptation.ContainerUpdate, error) {
			return nil, nil
		},
		adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")),
		adaptation.WithSocketPath(rt.socket),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := nri.Start(); err != nil {
		t.Fatal(err)
	}
	<-rt.synced // the synchronization of pre-installed plugins, of which there are none
	t.Cleanup(nri.Stop)
	rt.nri = nri
	return rt
}

// removePins unmounts and removes every pin of the store at root, before
// the test's directories go: removing a directory tree would reach through a
// pin into what it shows.
func removePins(t testing.TB, root string) {
	if _, err := os.Stat(filepath.Join(root, "pins")); err != nil {
		return
	}
	s, err := volumes.Open(root)
	if err != nil {
		t.Errorf("removing pins: %v", err)
		return
	}
	defer s.Close()
	if _, err := s.Pins().RemoveStale(nil); err != nil {
		t.Errorf("removing pins: %v", err)
	}
}

// connect starts the plugin and waits until it is registered and synchronized.
func (rt *runtime) connect() *plugin.Plugin {
	t := rt.t
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	if os.Getenv("NRI_VOLUMES_TEST_LOG") != "" {
		log.SetOutput(os.Stderr)
		log.SetLevel(logrus.DebugLevel)
	}
	p, err := plugin.New(rt.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s, err := stub.New(p, stub.WithSocketPath(rt.socket), stub.WithPluginName("volumes"), stub.WithPluginIdx("10"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(); s.Wait(); p.Close() })
	select {
	case err := <-rt.synced:
		if err != nil {
			t.Fatalf("Synchronize: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the plugin did not synchronize")
	}
	rt.waitRegistered()
	return p
}

// waitRegistered waits until the runtime sends requests to the plugin: NRI
// adds a plugin to its list only after Synchronize returns. The probe asks
// for a tmpfs, which leaves nothing in the store.
func (rt *runtime) waitRegistered() {
	t := rt.t
	t.Helper()
	pod := newPod("probe", "default", map[string]string{plugin.VolumesKey: "- {type: tmpfs, target: /probe}"})
	probe := newContainer("probe", "probe", "probe")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		adj, err := rt.create(pod, probe)
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		if findMount(adj, "/probe") != nil {
			return
		}
	}
	t.Fatal("the runtime never sent the plugin a request")
}

func (rt *runtime) store() *volumes.Store {
	s, err := volumes.Open(rt.cfg.Root)
	if err != nil {
		rt.t.Fatal(err)
	}
	rt.t.Cleanup(func() { s.Close() })
	return s
}

func (rt *runtime) create(pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := rt.nri.CreateContainer(ctx, &adaptation.CreateContainerRequest{Pod: pod, Container: ctr})
	if err != nil {
		return nil, err
	}
	return resp.GetAdjust(), nil
}

// start sends StartContainer for ctr, created with adj: the container has
// the mounts adj gave it, as in the spec containerd converts.
func (rt *runtime) start(pod *api.PodSandbox, ctr *api.Container, adj *api.ContainerAdjustment) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	started := &api.Container{Id: ctr.Id, PodSandboxId: ctr.PodSandboxId, Name: ctr.Name, Image: ctr.Image, Mounts: adj.GetMounts()}
	return rt.nri.StartContainer(ctx, &adaptation.StartContainerRequest{Pod: pod, Container: started})
}

// writeImageConfig puts an image config blob in the fake content store and returns its digest.
func (rt *runtime) writeImageConfig(doc string) string {
	sum := sha256.Sum256([]byte(doc))
	hexSum := hex.EncodeToString(sum[:])
	dir := filepath.Join(rt.cfg.ContainerdRoot, "io.containerd.content.v1.content", "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		rt.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hexSum), []byte(doc), 0o644); err != nil {
		rt.t.Fatal(err)
	}
	return "sha256:" + hexSum
}

func newPod(id, ns string, annotations map[string]string) *api.PodSandbox {
	return &api.PodSandbox{Id: id, Name: "pod-" + id, Uid: "uid-" + id, Namespace: ns, Annotations: annotations}
}

func newContainer(id, podID, name string) *api.Container {
	return &api.Container{Id: id, PodSandboxId: podID, Name: name}
}

func findMount(adj *api.ContainerAdjustment, dst string) *api.Mount {
	for _, m := range adj.GetMounts() {
		if m.Destination == dst {
			return m
		}
	}
	return nil
}

func TestNamedVolumeLifecycle(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	pod := newPod("p1", "shop", map[string]string{plugin.VolumesKey + "/pod": "- redis-data:/data"})
	adj, err := rt.create(pod, newContainer("c1", "p1", "redis"))
	if err != nil {
		t.Fatal(err)
	}
	m := findMount(adj, "/data")
	want := filepath.Join(rt.cfg.Root, "volumes", "shop", "redis-data", "_data")
	if m == nil || m.Source != want || m.Type != "bind" || !slices.Contains(m.Options, "nosuid") {
		t.Fatalf("mount /data = %+v, want a nosuid bind of %s", m, want)
	}
	if _, err := os.Stat(want); err != nil {
		t.Fatalf("volume directory: %v", err)
	}
	store := rt.store()
	v, err := store.Get("shop", "redis-data")
	if err != nil || !slices.Equal(v.UsedBy, []string{"c1"}) {
		t.Fatalf("Get() = %+v, %v; want used by c1", v, err)
	}
	if err := store.Remove("shop", "redis-data"); err == nil || !strings.Contains(err.Error(), "c1") {
		t.Fatalf("Remove() of a volume in use = %v, want an error naming c1", err)
	}

	if err := rt.nri.RemoveContainer(context.Background(), &adaptation.RemoveContainerRequest{Pod: pod, Container: newContainer("c1", "p1", "redis")}); err != nil {
		t.Fatal(err)
	}
	if err := rt.nri.RemovePodSandbox(context.Background(), &adaptation.RemovePodSandboxRequest{Pod: pod}); err != nil {
		t.Fatal(err)
	}
	v, err = store.Get("shop", "redis-data")
	if err != nil || len(v.UsedBy) != 0 {
		t.Fatalf("after the pod: Get() = %+v, %v; want the volume kept and unused", v, err)
	}
	// Same name, other namespace: another volume.
	other := newPod("p2", "default", map[string]string{plugin.VolumesKey: "- redis-data:/data"})
	adj, err = rt.create(other, newContainer("c2", "p2", "redis"))
	if err != nil {
		t.Fatal(err)
	}
	if m := findMount(adj, "/data"); m == nil || !strings.Contains(m.Source, "/volumes/default/redis-data/") {
		t.Fatalf("mount in namespace default = %+v", m)
	}
}

func TestContainerAnnotationWins(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	pod := newPod("p1", "default", map[string]string{
		plugin.VolumesKey + "/pod":          "- pod-level:/pod",
		plugin.VolumesKey + "/container.db": "- db-level:/db",
	})
	adj, err := rt.create(pod, newContainer("c1", "p1", "db"))
	if err != nil {
		t.Fatal(err)
	}
	if findMount(adj, "/db") == nil || findMount(adj, "/pod") != nil {
		t.Fatalf("container-scoped key did not win: %+v", adj.GetMounts())
	}
	ctr := newContainer("c2", "p1", "web")
	ctr.Annotations = map[string]string{plugin.VolumesKey: "- {type: tmpfs, target: /scratch, size: 8Mi}"}
	adj, err = rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	m := findMount(adj, "/scratch")
	if m == nil || m.Type != "tmpfs" || !slices.Contains(m.Options, "size=8388608") || findMount(adj, "/pod") != nil {
		t.Fatalf("container's own annotation did not win: %+v", adj.GetMounts())
	}
}

func TestImageVolumeFromConfigDigest(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	digest := rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{"Volumes":{"/data":{},"/var/log/app/":{}}}}`)
	pod := newPod("p1", "default", nil)
	ctr := newContainer("c1", "p1", "redis")
	ctr.Image = &api.Image{Name: "localhost/redis:e2e", ConfigDigest: digest}
	adj, err := rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	data, logs := findMount(adj, "/data"), findMount(adj, "/var/log/app")
	if data == nil || logs == nil {
		t.Fatalf("image volumes not mounted: %+v", adj.GetMounts())
	}
	hooks := adj.GetHooks().GetCreateRuntime()
	if len(hooks) != 1 || hooks[0].Path != rt.cfg.HookPath || !slices.Contains(hooks[0].Args, "copyup") {
		t.Fatalf("copy-up hook = %+v", hooks)
	}
	store := rt.store()
	vols, err := store.List(volumes.ListOptions{Namespace: "default"})
	if err != nil || len(vols) != 2 || !vols[0].Anonymous || len(vols[0].Name) != 64 {
		t.Fatalf("List() = %+v, %v; want two anonymous volumes", vols, err)
	}

	// A restart in the pod: same name, new container ID, same volume.
	if err := rt.nri.RemoveContainer(context.Background(), &adaptation.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
		t.Fatal(err)
	}
	again := newContainer("c2", "p1", "redis")
	again.Image = ctr.Image
	adj, err = rt.create(pod, again)
	if err != nil {
		t.Fatal(err)
	}
	if m := findMount(adj, "/data"); m == nil || m.Source != data.Source {
		t.Fatalf("after a restart /data = %+v, want %s", m, data.Source)
	}
	if err := rt.nri.RemoveContainer(context.Background(), &adaptation.RemoveContainerRequest{Pod: pod, Container: again}); err != nil {
		t.Fatal(err)
	}
	if err := rt.nri.RemovePodSandbox(context.Background(), &adaptation.RemovePodSandboxRequest{Pod: pod}); err != nil {
		t.Fatal(err)
	}
	if vols, _ := store.List(volumes.ListOptions{Namespace: "default"}); len(vols) != 0 {
		t.Fatalf("anonymous volumes left after the pod: %+v", vols)
	}
	if _, err := os.Stat(filepath.Dir(data.Source)); !os.IsNotExist(err) {
		t.Fatalf("volume directory left after the pod: %v", err)
	}
}

func TestImageVolumeModes(t *testing.T) {
	cases := []struct {
		name       string
		annotation string
		wantType   string
	}{
		{name: "default volume", wantType: "bind"},
		{name: "tmpfs by annotation", annotation: "tmpfs", wantType: "tmpfs"},
		{name: "ignore by annotation", annotation: "ignore"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, nil)
			rt.connect()
			annotations := map[string]string{}
			if tc.annotation != "" {
				annotations[plugin.ImageVolumesKey+"/container.app"] = tc.annotation
			}
			pod := newPod("p1", "default", annotations)
			ctr := newContainer("c1", "p1", "app")
			// containerd 2.2/2.3: no image info, only its own image-volume mount.
			ctr.Mounts = []*api.Mount{{Destination: "/data", Type: "bind", Options: []string{"rbind"},
				Source: rt.cfg.ContainerdRoot + "/io.containerd.grpc.v1.cri/containers/c1/volumes/0123"}}
			adj, err := rt.create(pod, ctr)
			if err != nil {
				t.Fatal(err)
			}
			var added *api.Mount
			removed := false
			for _, m := range adj.GetMounts() {
				if m.Destination == api.MarkForRemoval("/data") {
					removed = true
				} else if m.Destination == "/data" {
					added = m
				}
			}
			if !removed && added == nil {
				t.Fatalf("containerd's own image-volume mount was kept: %+v", adj.GetMounts())
			}
			switch {
			case tc.wantType == "" && added != nil:
				t.Fatalf("ignore mode mounted %+v", added)
			case tc.wantType != "" && (added == nil || added.Type != tc.wantType):
				t.Fatalf("mount = %+v, want type %s", added, tc.wantType)
			case tc.wantType == "tmpfs" && !slices.Contains(added.Options, "tmpcopyup"):
				t.Fatalf("image tmpfs without tmpcopyup: %v", added.Options)
			}
		})
	}
}

func TestBadAnnotationLeavesNothing(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	key := plugin.VolumesKey + "/container.app"
	pod := newPod("p1", "default", map[string]string{key: "- good-one:/a\n- /b\n- ../../etc:/c"})
	_, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "../../etc") {
		t.Fatalf("CreateContainer() error = %v, want one naming %s and the item", err, key)
	}
	if vols, err := rt.store().List(volumes.ListOptions{AllNamespaces: true}); err != nil || len(vols) != 0 {
		t.Fatalf("volumes left behind: %+v, %v", vols, err)
	}
	badNS := newPod("p2", "../x", map[string]string{plugin.VolumesKey: "- v:/a"})
	if _, err := rt.create(badNS, newContainer("c2", "p2", "app")); err == nil || !strings.Contains(err.Error(), `"../x"`) {
		t.Fatalf("CreateContainer() in namespace ../x = %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(rt.cfg.Root, "volumes"))
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			t.Errorf("store has %q after failed creations", e.Name())
		}
	}
}

func TestSynchronizeRebuildsReferences(t *testing.T) {
	rt := newRuntime(t, nil)
	store := rt.store()
	if _, _, err := store.Acquire("gone", []volumes.Request{{Namespace: "default", Name: "shared"}}, nil); err != nil {
		t.Fatal(err)
	}
	dead := &volumes.Owner{PodSandboxID: "dead-pod", Container: "app", Target: "/data"}
	if _, _, err := store.Acquire("dead-ctr", []volumes.Request{{Namespace: "default", Owner: dead}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := store.Release("dead-ctr"); err != nil {
		t.Fatal(err)
	}
	// The runtime still runs c1 with the shared volume; dead-pod went away
	// while the plugin was down.
	rt.pods = []*api.PodSandbox{newPod("p1", "default", nil)}
	c1 := newContainer("c1", "p1", "app")
	c1.Mounts = []*api.Mount{{Destination: "/data", Type: "bind", Source: filepath.Join(rt.cfg.Root, "volumes", "default", "shared", "_data")}}
	rt.ctrs = []*api.Container{c1}
	rt.connect()

	v, err := store.Get("default", "shared")
	if err != nil || !slices.Equal(v.UsedBy, []string{"c1"}) {
		t.Fatalf("after Synchronize: %+v, %v; want used by c1 only", v, err)
	}
	// The removal of orphans runs in the background after Synchronize.
	if !eventually(func() bool {
		_, err := store.Get("default", volumes.AnonymousName(*dead))
		return errors.Is(err, volumes.ErrNotFound)
	}) {
		t.Fatal("anonymous volume of a removed pod survived Synchronize")
	}
}

// eventually polls cond for up to 10s.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func TestKeepAnonymousAfterPod(t *testing.T) {
	rt := newRuntime(t, func(c *config.Config) { c.AnonymousVolumes.KeepAfterPod = true })
	rt.connect()
	pod := newPod("p1", "default", map[string]string{plugin.VolumesKey: "- /cache"})
	ctr := newContainer("c1", "p1", "app")
	if _, err := rt.create(pod, ctr); err != nil {
		t.Fatal(err)
	}
	_ = rt.nri.RemoveContainer(context.Background(), &adaptation.RemoveContainerRequest{Pod: pod, Container: ctr})
	_ = rt.nri.RemovePodSandbox(context.Background(), &adaptation.RemovePodSandboxRequest{Pod: pod})
	vols, err := rt.store().List(volumes.ListOptions{Namespace: "default"})
	if err != nil || len(vols) != 1 || !vols[0].Anonymous {
		t.Fatalf("List() = %+v, %v; want the anonymous volume kept", vols, err)
	}
}

func TestConfigureFromRuntime(t *testing.T) {
	rt := newRuntime(t, nil)
	other := filepath.Join(t.TempDir(), "configured-store")
	p := rt.connect()
	if _, err := p.Configure(context.Background(), "root: "+other+"\nimageVolumes: ignore\n", "containerd", "v2"); err != nil {
		t.Fatal(err)
	}
	if got := p.Config(); got.Root != other || got.ImageVolumes.Mode != config.ImageVolumeIgnore {
		t.Fatalf("Config() after Configure = %+v", got)
	}
	if _, err := p.Configure(context.Background(), "imageVolumes: sometimes\n", "containerd", "v2"); err == nil || !strings.Contains(err.Error(), "imageVolumes") {
		t.Fatalf("Configure() with a bad value = %v", err)
	}
}

func TestVolumesPerPodLimit(t *testing.T) {
	rt := newRuntime(t, func(c *config.Config) { c.Limits.VolumesPerContainer, c.Limits.VolumesPerPod = 2, 3 })
	rt.connect()
	pod := newPod("p1", "default", map[string]string{plugin.VolumesKey: "- /a\n- /b"})
	if _, err := rt.create(pod, newContainer("c1", "p1", "one")); err != nil {
		t.Fatal(err)
	}
	// A restart of the same container claims the same volumes again.
	if _, err := rt.create(pod, newContainer("c2", "p1", "one")); err != nil {
		t.Fatalf("a restarted container was refused: %v", err)
	}
	_, err := rt.create(pod, newContainer("c3", "p1", "two"))
	if err == nil || !strings.Contains(err.Error(), "limits.volumesPerPod") {
		t.Fatalf("a fourth volume in the pod: %v, want a limits.volumesPerPod error", err)
	}
	if vols, _ := rt.store().List(volumes.ListOptions{Namespace: "default"}); len(vols) != 2 {
		t.Fatalf("volumes after the refusal: %d, want the first container's 2", len(vols))
	}
	// Another pod has a budget of its own.
	other := newPod("p2", "default", map[string]string{plugin.VolumesKey: "- /a\n- /b"})
	if _, err := rt.create(other, newContainer("c4", "p2", "two")); err != nil {
		t.Fatal(err)
	}
}

// TestLabelsAreNotConfiguration checks that container labels, which an image
// can set, never configure volumes: only annotations do.
func TestLabelsAreNotConfiguration(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	pod := newPod("p1", "default", nil)
	pod.Labels = map[string]string{plugin.VolumesKey: "- /etc-copy", plugin.ImageVolumesKey: "tmpfs"}
	ctr := newContainer("c1", "p1", "app")
	ctr.Labels = map[string]string{plugin.VolumesKey: "- stolen:/data", plugin.VolumesKey + "/container.app": "- /x"}
	adj, err := rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	if len(adj.GetMounts()) != 0 {
		t.Fatalf("labels configured mounts: %+v", adj.GetMounts())
	}
}

// TestSynchronizeSymlinkedRoot runs the store under a ROOT reached through a
// symlink, as when a bigger disk is linked in. containerd reports the mount
// sources the plugin gave, which carry the resolved path; after a restart
// the plugin must still know who uses each volume, so that rm and prune
// refuse it.
func TestSynchronizeSymlinkedRoot(t *testing.T) {
	for _, source := range []string{"resolved", "unresolved"} {
		t.Run("source="+source, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk")
			if err := os.Mkdir(disk, 0o700); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(disk, link); err != nil {
				t.Fatal(err)
			}
			rt := newRuntime(t, func(c *config.Config) { c.Root = link })
			store := rt.store()
			vol, err := store.Create("default", "shared", volumes.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			src := vol.Mountpoint
			if source == "unresolved" {
				src = filepath.Join(link, "volumes", "default", "shared", "_data")
			}
			rt.pods = []*api.PodSandbox{newPod("p1", "default", nil)}
			c1 := newContainer("c1", "p1", "app")
			c1.Mounts = []*api.Mount{{Destination: "/data", Type: "bind", Source: src}}
			rt.ctrs = []*api.Container{c1}
			rt.connect()

			if err := store.Remove("default", "shared"); !errors.Is(err, volumes.ErrInUse) || !strings.Contains(err.Error(), "c1") {
				t.Errorf("volume rm of a volume a running container mounts: %v; want it refused naming c1", err)
			}
			if removed, _, err := store.Prune(volumes.PruneOptions{Namespace: "default", All: true}); err != nil || len(removed) != 0 {
				t.Errorf("prune -a removed %d volumes (%v); want none", len(removed), err)
			}
			if _, err := os.Stat(filepath.Join(disk, "volumes", "default", "shared", "_data")); err != nil {
				t.Errorf("the volume's data: %v", err)
			}
		})
	}
}

// TestImageVolumesPodOverrideForbidden configures imageVolumes: {mode:
// ignore, podOverride: false}: a pod asking for another mode through the
// annotation is refused with a message naming the annotation key and the
// configuration key, and gets nothing; asking for the configured mode is no
// override.
func TestImageVolumesPodOverrideForbidden(t *testing.T) {
	rt := newRuntime(t, func(c *config.Config) {
		c.ImageVolumes = config.ImageVolumes{Mode: config.ImageVolumeIgnore, PodOverride: false}
	})
	rt.connect()
	digest := rt.writeImageConfig(`{"config":{"Volumes":{"/data":{}}}}`)
	for _, tc := range []struct {
		key, value string
		wantErr    bool
	}{
		{plugin.ImageVolumesKey + "/pod", "volume", true},
		{plugin.ImageVolumesKey + "/container.app", "tmpfs", true},
		{plugin.ImageVolumesKey, "ignore", false},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			pod := newPod("p1", "default", map[string]string{tc.key: tc.value})
			ctr := newContainer("c1", "p1", "app")
			ctr.Image = &api.Image{Name: "app:latest", ConfigDigest: digest}
			adj, err := rt.create(pod, ctr)
			switch {
			case tc.wantErr && (err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), "imageVolumes.podOverride")):
				t.Fatalf("CreateContainer = %v; want an error naming %s and imageVolumes.podOverride", err, tc.key)
			case !tc.wantErr && err != nil:
				t.Fatalf("CreateContainer: %v", err)
			}
			if m := findMount(adj, "/data"); m != nil {
				t.Errorf("the image VOLUME was mounted: %+v", m)
			}
		})
	}
	storeIsEmpty(t, rt)
}

// TestCreateContainerLockHeld holds the store's lock from elsewhere, as a
// long CLI prune would: CreateContainer fails within the configured
// lockTimeout, well inside NRI's request timeout, with a message that names
// the volume and the lock, and leaves nothing; once the lock is free the
// plugin, still connected, serves the container.
func TestCreateContainerLockHeld(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	lock, err := os.OpenFile(filepath.Join(rt.cfg.Root, "volumes", ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	pod := newPod("p1", "shop", map[string]string{plugin.VolumesKey: "- redis-data:/data"})
	_, err = rt.create(pod, newContainer("c1", "p1", "redis"))
	for _, want := range []string{"volume store busy", "shop/redis-data", filepath.Join("volumes", ".lock")} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("CreateContainer with the store locked elsewhere = %v; want an error naming %q", err, want)
		}
	}
	storeIsEmpty(t, rt)
	lock.Close()
	adj, err := rt.create(pod, newContainer("c2", "p1", "redis"))
	if err != nil || findMount(adj, "/data") == nil {
		t.Fatalf("CreateContainer once the lock is free = %+v, %v", adj.GetMounts(), err)
	}
}

// TestRemovePodSandboxLeavesDataToReaper removes a pod whose anonymous
// volume holds data: the volume is gone from the store when
// RemovePodSandbox returns, and the reaper deletes its data afterwards,
// outside the request.
func TestRemovePodSandboxLeavesDataToReaper(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	pod := newPod("p1", "default", map[string]string{plugin.VolumesKey: "- /cache"})
	ctr := newContainer("c1", "p1", "app")
	adj, err := rt.create(pod, ctr)
	if err != nil {
		t.Fatal(err)
	}
	m := findMount(adj, "/cache")
	if err := os.MkdirAll(filepath.Join(m.Source, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := rt.nri.RemoveContainer(ctx, &adaptation.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
		t.Fatal(err)
	}
	if err := rt.nri.RemovePodSandbox(ctx, &adaptation.RemovePodSandboxRequest{Pod: pod}); err != nil {
		t.Fatal(err)
	}
	if vols, err := rt.store().List(volumes.ListOptions{Namespace: "default"}); err != nil || len(vols) != 0 {
		t.Fatalf("volumes after RemovePodSandbox: %d, %v", len(vols), err)
	}
	trash := filepath.Join(rt.cfg.Root, "volumes", ".trash")
	if !eventually(func() bool {
		entries, err := os.ReadDir(trash)
		return err == nil && len(entries) == 0
	}) {
		t.Fatalf("the reaper never deleted the removed volume's data from %s", trash)
	}
}

// TestSizedVolumesThroughNRI follows sized volumes through the plugin: an
// annotation's size and sizes.defaultSize make volumes whose file systems
// are mounted at the mount's source when CreateContainer returns, a size
// above sizes.maxSize and a namespace over limits.namespaceBytes are refused
// naming the key and leave nothing, and removing the pod unmounts and
// removes its sized anonymous volume.
func TestSizedVolumesThroughNRI(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	rt := newRuntime(t, func(c *config.Config) {
		c.Sizes = config.Sizes{Backend: "image", DefaultSize: 8 << 20, MaxSize: 64 << 20}
		c.Limits.NamespaceBytes = 40 << 20
	})
	rt.connect()
	t.Cleanup(func() { fsx.UnmountUnder(rt.cfg.Root) })
	pod := newPod("p1", "shop", map[string]string{plugin.VolumesKey: "- {source: db, target: /data, size: 16Mi}\n- /cache"})
	adj, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]int64{"/data": 16 << 20, "/cache": 8 << 20} {
		m := findMount(adj, dst)
		if m == nil {
			t.Fatalf("no mount at %s", dst)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(m.Source, &st); err != nil {
			t.Fatal(err)
		}
		if total := int64(st.Blocks) * st.Bsize; total < want || total > want*11/10 {
			t.Errorf("%s: the file system at %s shows %d bytes, want about %d", dst, m.Source, total, want)
		}
	}
	for _, tc := range []struct{ ann, want string }{
		{"- {source: huge, target: /x, size: 1Gi}", "size 1Gi is above sizes.maxSize 64Mi"},
		{"- {source: more, target: /x, size: 32Mi}", "above limits.namespaceBytes 40MiB"},
	} {
		bad := newPod("p2", "shop", map[string]string{plugin.VolumesKey: tc.ann})
		_, err := rt.create(bad, newContainer("c2", "p2", "app"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.ann, err, tc.want)
		}
	}
	if vols, _ := rt.store().List(volumes.ListOptions{Namespace: "shop"}); len(vols) != 2 {
		t.Errorf("volumes after the refusals: %d, want the first pod's 2", len(vols))
	}
	if err := rt.nri.RemoveContainer(context.Background(), &adaptation.RemoveContainerRequest{Pod: pod, Container: newContainer("c1", "p1", "app")}); err != nil {
		t.Fatal(err)
	}
	if err := rt.nri.RemovePodSandbox(context.Background(), &adaptation.RemovePodSandboxRequest{Pod: pod}); err != nil {
		t.Fatal(err)
	}
	if vols, _ := rt.store().List(volumes.ListOptions{Namespace: "shop"}); len(vols) != 1 || vols[0].Name != "db" || vols[0].Limit != 16<<20 {
		t.Errorf("after the pod: %+v, want the named sized volume only", vols)
	}
	if m, _ := fsx.MountsUnder(rt.cfg.Root); len(m) != 0 {
		t.Errorf("mounts left after the pod: %v", m)
	}
}

// TestRemovePodSandboxAnswersWhileHealthCheckWaits: a CLI holds the store's
// lock and a /healthz probe's Ping waits for it. RemovePodSandbox must still
// fail or finish within lockTimeout, or containerd drops the plugin.
func TestRemovePodSandboxAnswersWhileHealthCheckWaits(t *testing.T) {
	rt := newRuntime(t, func(c *config.Config) { c.LockTimeout = config.Duration(200 * time.Millisecond) })
	p := rt.connect()
	lock, err := os.OpenFile(filepath.Join(rt.cfg.Root, "volumes", ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close() // before the Cleanup's p.Close, which enters too
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	go p.Store().Stats().Ping(context.Background()) // what /healthz does
	time.Sleep(100 * time.Millisecond)              // set-up: let the probe wait first
	done := make(chan error, 1)
	go func() { done <- p.RemovePodSandbox(context.Background(), newPod("p1", "default", nil)) }()
	select {
	case err := <-done:
		t.Logf("RemovePodSandbox returned: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("RemovePodSandbox still running 5s later with lockTimeout 200ms: containerd would drop the plugin")
	}
}

// TestBusyRemovalsAreRetried: RemoveContainer and RemovePodSandbox give up
// waiting for the store's lock after lockTimeout while a CLI holds it, and
// containerd never sends them again. The plugin retries them in the
// background once the lock is free: the gone container's references and
// pins go, and so does the pod's anonymous volume.
func TestBusyRemovalsAreRetried(t *testing.T) {
	allowed := t.TempDir()
	rt := newRuntime(t, func(c *config.Config) {
		c.LockTimeout = config.Duration(100 * time.Millisecond)
		c.BindMounts.AllowedHostPaths = []string{allowed}
	})
	p := rt.connect()
	pod := newPod("p1", "default", map[string]string{plugin.VolumesKey: "- data:/data\n- /cache\n- " + allowed + ":/host"})
	ctr := newContainer("c1", "p1", "app")
	if _, err := rt.create(pod, ctr); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(rt.cfg.Root, "volumes", ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	errC := p.RemoveContainer(ctx, pod, ctr)
	errP := p.RemovePodSandbox(ctx, pod)
	lock.Close() // the CLI is done
	if errC != nil || errP != nil {
		t.Errorf("while the CLI held the lock: RemoveContainer = %v, RemovePodSandbox = %v; want both queued for a retry", errC, errP)
	}
	store := rt.store()
	if !eventually(func() bool {
		v, err := store.Get("default", "data")
		return err == nil && len(v.UsedBy) == 0
	}) {
		v, _ := store.Get("default", "data")
		t.Errorf("the removed container c1 still holds volume data: UsedBy %v", v.UsedBy)
	}
	if _, err := os.Stat(filepath.Join(rt.cfg.Root, "pins", "c1")); err == nil {
		t.Errorf("the removed container's pins are still at %s", filepath.Join(rt.cfg.Root, "pins", "c1"))
	}
	if !eventually(func() bool {
		vols, err := store.List(volumes.ListOptions{Namespace: "default"})
		return err == nil && len(vols) == 1
	}) {
		vols, err := store.List(volumes.ListOptions{Namespace: "default"})
		t.Errorf("after the pod's removal the store holds %d volumes (%v), want only data", len(vols), err)
	}
}

// A container's start waits until the named volumes it mounts are durable.
// Here the volumes were left unsynced, as by a plugin that died between
// making them and syncing them in the background: StartContainer syncs the
// one it can, and fails, naming it, for the one whose sync fails, so that
// containerd does not start that container.
func TestStartContainerMakesVolumesDurable(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	store := rt.store()
	if _, _, err := store.Acquire("earlier", []volumes.Request{
		{Namespace: "default", Name: "pending", PersistLater: true},
		{Namespace: "default", Name: "unreadable", PersistLater: true},
	}, nil); err != nil {
		t.Fatal(err)
	}
	dir := func(name string) string { return filepath.Join(rt.cfg.Root, "volumes", "default", name) }
	for _, name := range []string{"pending", "unreadable"} {
		if _, err := os.Stat(filepath.Join(dir(name), "sync-pending")); err != nil {
			t.Fatalf("volume %s was made unsynced, yet: %v", name, err)
		}
	}
	// Containers created before this plugin started: containerd sends
	// their mounts as its spec has them.
	mounting := func(name string) *api.ContainerAdjustment {
		return &api.ContainerAdjustment{Mounts: []*api.Mount{
			{Destination: "/tmp", Source: "tmpfs", Type: "tmpfs"},
			{Destination: "/data", Source: filepath.Join(dir(name), "_data"), Type: "bind", Options: []string{"rbind"}},
		}}
	}
	if err := rt.start(newPod("p1", "default", nil), newContainer("c1", "p1", "app"), mounting("pending")); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	// A mount of a path shaped like a volume's that names none.
	if err := rt.start(newPod("p0", "default", nil), newContainer("c0", "p0", "app"), mounting("no-such-volume")); err != nil {
		t.Errorf("StartContainer of a container mounting a store path of no volume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir("pending"), "sync-pending")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after StartContainer the volume is not known durable: sync-pending %v", err)
	}

	// A volume.json that cannot be opened cannot be synced.
	if err := os.Remove(filepath.Join(dir("unreadable"), "volume.json")); err != nil {
		t.Fatal(err)
	}
	err := rt.start(newPod("p2", "default", nil), newContainer("c2", "p2", "app"), mounting("unreadable"))
	t.Logf("StartContainer: %v", err)
	if err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("StartContainer of a container whose volume cannot be synced = %v, want an error naming the volume", err)
	}
}

// TestSizedFormattingOutsideTheRequest asks for more new sized volumes than
// can be formatted within the request's format budget: CreateContainer
// fails at once with a message naming the annotation key, the item and the
// reason, the formatting goes on, and a retry, as kubelet's, gets them all.
func TestSizedFormattingOutsideTheRequest(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	rt := newRuntime(t, func(c *config.Config) {
		c.Sizes.Backend = "image"
		c.Limits.Overcommit = 1000
		c.LockTimeout = config.Duration(2 * time.Millisecond) // a format budget of 1ms
	})
	rt.connect()
	t.Cleanup(func() { fsx.UnmountUnder(rt.cfg.Root) })
	var items strings.Builder
	for i := range 4 {
		fmt.Fprintf(&items, "- {source: big-%d, target: /big/%d, size: 1Ti}\n", i, i)
	}
	pod := newPod("p1", "shop", map[string]string{plugin.VolumesKey: items.String()})
	_, err := rt.create(pod, newContainer("c1", "p1", "app"))
	if err == nil {
		t.Fatal("4 new volumes of 1 TiB were formatted within 1ms")
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{plugin.VolumesKey, "item ", "big-", "being formatted", "retry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	var adj *api.ContainerAdjustment
	for deadline := time.Now().Add(2 * time.Minute); ; {
		adj, err = rt.create(pod, newContainer("c1", "p1", "app"))
		// A 2ms lock timeout also gives up on the formatter's own turns
		// at the lock: busy either way, as kubelet's retry would see it.
		if err == nil || !strings.Contains(err.Error(), "volume store busy") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("retrying: %v", err)
	}
	for i := range 4 {
		if m := findMount(adj, fmt.Sprintf("/big/%d", i)); m == nil {
			t.Errorf("no mount at /big/%d", i)
		}
	}
}
