package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/sirupsen/logrus"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/metrics"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// TestInstrumentedHandlesWhatThePluginHandles guards the wrapper: the stub
// subscribes by type assertion, so a handler the plugin gains and the wrapper
// lacks would silently never be called.
func TestInstrumentedHandlesWhatThePluginHandles(t *testing.T) {
	ifaces := []reflect.Type{
		reflect.TypeFor[stub.ConfigureInterface](), reflect.TypeFor[stub.SynchronizeInterface](),
		reflect.TypeFor[stub.ShutdownInterface](), reflect.TypeFor[stub.RunPodInterface](),
		reflect.TypeFor[stub.UpdatePodInterface](), reflect.TypeFor[stub.StopPodInterface](),
		reflect.TypeFor[stub.RemovePodInterface](), reflect.TypeFor[stub.PostUpdatePodInterface](),
		reflect.TypeFor[stub.CreateContainerInterface](), reflect.TypeFor[stub.StartContainerInterface](),
		reflect.TypeFor[stub.UpdateContainerInterface](), reflect.TypeFor[stub.StopContainerInterface](),
		reflect.TypeFor[stub.RemoveContainerInterface](), reflect.TypeFor[stub.PostCreateContainerInterface](),
		reflect.TypeFor[stub.PostStartContainerInterface](), reflect.TypeFor[stub.PostUpdateContainerInterface](),
		reflect.TypeFor[stub.ValidateContainerAdjustmentInterface](),
	}
	p, w := reflect.TypeFor[*plugin.Plugin](), reflect.TypeFor[*metrics.Instrumented]()
	for _, i := range ifaces {
		if p.Implements(i) != w.Implements(i) {
			t.Errorf("plugin implements %s: %v, Instrumented: %v", i.Name(), p.Implements(i), w.Implements(i))
		}
	}
}

// nriRuntime is NRI's own runtime side on a real socket.
type nriRuntime struct {
	nri    *adaptation.Adaptation
	socket string
	synced chan error
}

func startRuntime(t *testing.T) *nriRuntime {
	t.Helper()
	logrus.StandardLogger().SetOutput(io.Discard)
	dir := t.TempDir()
	rt := &nriRuntime{socket: filepath.Join(dir, "nri.sock"), synced: make(chan error, 4)}
	nri, err := adaptation.New("containerd-test", "v2.4.2",
		func(ctx context.Context, cb adaptation.SyncCB) error {
			_, err := cb(ctx, nil, nil)
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
	<-rt.synced
	rt.nri = nri
	return rt
}

func (rt *nriRuntime) create(t *testing.T, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := rt.nri.CreateContainer(ctx, &adaptation.CreateContainerRequest{Pod: pod, Container: ctr})
	return resp.GetAdjust(), err
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestMetricsAndHealth(t *testing.T) {
	rt := startRuntime(t)
	cfg := config.Default()
	cfg.Root = filepath.Join(t.TempDir(), "store")
	cfg.ContainerdRoot = t.TempDir()
	log := logrus.New()
	log.SetOutput(io.Discard)
	p, err := plugin.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	m := metrics.New(p.Store)
	h := m.Handler()
	if code, body := get(t, h, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected") {
		t.Errorf("/healthz before connecting: %d %q", code, body)
	}
	s, err := stub.New(m.Instrument(p), stub.WithSocketPath(rt.socket), stub.WithPluginName("volumes"), stub.WithPluginIdx("10"),
		stub.WithOnClose(func() { m.SetConnected(false) }))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer rt.nri.Stop()
	if err := <-rt.synced; err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz when connected: %d %q", code, body)
	}

	pod := &api.PodSandbox{Id: "p1", Name: "web", Namespace: "shop", Annotations: map[string]string{
		plugin.VolumesKey + "/pod": "- cache:/cache\n- /scratch",
	}}
	// NRI adds a plugin to its list only once Synchronize returned: retry
	// until the request reaches it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		adj, err := rt.create(t, pod, &api.Container{Id: "c1", PodSandboxId: "p1", Name: "app"})
		if err != nil {
			t.Fatal(err)
		}
		if len(adj.GetMounts()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the runtime never sent the plugin the request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	bad := &api.PodSandbox{Id: "p2", Name: "bad", Namespace: "shop", Annotations: map[string]string{
		plugin.VolumesKey + "/pod": "- ../x:/x",
	}}
	if _, err := rt.create(t, bad, &api.Container{Id: "c2", PodSandboxId: "p2", Name: "app"}); err == nil {
		t.Fatal("a bad annotation was accepted")
	}

	code, body := get(t, h, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`nri_volumes_nri_requests_total{event="CreateContainer",result="ok"} 1`,
		`nri_volumes_nri_requests_total{event="CreateContainer",result="error"} 1`,
		`nri_volumes_nri_requests_total{event="Synchronize",result="ok"} 1`,
		`nri_volumes_nri_request_duration_seconds_count{event="CreateContainer"} 2`,
		`nri_volumes_volumes{kind="anonymous",namespace="shop"} 1`,
		`nri_volumes_volumes{kind="named",namespace="shop"} 1`,
		`nri_volumes_nri_connected 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(body, "nri_volumes_store_lock_wait_seconds_count") || strings.Contains(body, "nri_volumes_store_lock_wait_seconds_count 0\n") {
		t.Errorf("store lock waits not observed")
	}

	checkCopyUpMetrics(t, h, cfg.Root)
	checkSizedMetrics(t, h, p.Store())

	// The connection going down, as when containerd stops (the end-to-end
	// test restarts a real one).
	s.Stop()
	deadline = time.Now().Add(5 * time.Second)
	for code, _ := get(t, h, "/healthz"); code != http.StatusServiceUnavailable; code, _ = get(t, h, "/healthz") {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz after the runtime went away: %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, "nri_volumes_nri_connected 0") {
		t.Errorf("nri_connected after the runtime went away is not 0")
	}

	m.SetConnected(true)
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, "nri_volumes_nri_reconnects_total 1\n") {
		t.Errorf("a second registration is not counted as a reconnect")
	}
	p.Close()
	if code, body := get(t, h, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "closed") {
		t.Errorf("/healthz with the store closed: %d %q", code, body)
	}
}

// checkCopyUpMetrics records copy-ups as the hook does, from a store of its
// own on the same root, and checks that the next scrape counts each once.
func checkCopyUpMetrics(t *testing.T, h http.Handler, root string) {
	t.Helper()
	hook, err := volumes.Open(root, volumes.WithoutSweep())
	if err != nil {
		t.Fatal(err)
	}
	defer hook.Close()
	for _, r := range []volumes.CopyUpResult{
		{Bytes: 1000, Files: 3, Duration: 20 * time.Millisecond},
		{Bytes: 500, Files: 1, Duration: 2 * time.Millisecond},
		{Reason: volumes.CopyUpPodBudget, Bytes: 7, Duration: time.Millisecond},
		{Reason: "made-up", Duration: time.Millisecond},
	} {
		if err := hook.CopyUpLog().Record(r); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		`nri_volumes_copyups_total{result="ok"} 2`,
		`nri_volumes_copyups_total{result="failed"} 2`,
		`nri_volumes_copyup_failures_total{reason="pod-budget"} 1`,
		`nri_volumes_copyup_failures_total{reason="other"} 1`,
		`nri_volumes_copyup_failures_total{reason="limit"} 0`,
		`nri_volumes_copyup_failures_total{reason="no-space"} 0`,
		`nri_volumes_copyup_bytes_total 1500`,
		`nri_volumes_copyup_duration_seconds_count 4`,
		`nri_volumes_copyup_duration_seconds_bucket{le="0.01"} 3`,
	}
	for range 2 { // a second scrape counts nothing again
		_, body := get(t, h, "/metrics")
		for _, w := range want {
			if !strings.Contains(body, w+"\n") {
				t.Errorf("/metrics lacks %q", w)
			}
		}
		if strings.Contains(body, "made-up") {
			t.Errorf("a reason from the log was used as a label unchecked")
		}
	}
}

// checkSizedMetrics makes a sized volume and checks its size and usage are
// reported, summed by namespace; unsized volumes add nothing.
func checkSizedMetrics(t *testing.T, h http.Handler, store *volumes.Store) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil || os.Geteuid() != 0 {
		t.Log("sized volumes need root and mkfs.ext4: not checked")
		return
	}
	if _, body := get(t, h, "/metrics"); strings.Contains(body, "nri_volumes_volume_limit_bytes{") {
		t.Errorf("limits reported without sized volumes")
	}
	for _, name := range []string{"a", "b"} {
		if _, err := store.Create("sized", name, volumes.CreateOptions{Size: 16 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	_, body := get(t, h, "/metrics")
	if !strings.Contains(body, `nri_volumes_volume_limit_bytes{namespace="sized"} 3.3554432e+07`+"\n") {
		t.Errorf("/metrics lacks the sum of the sizes of namespace sized")
	}
	used := regexp.MustCompile(`nri_volumes_volume_used_bytes\{namespace="sized"\} (\S+)\n`).FindStringSubmatch(body)
	if used == nil {
		t.Fatal("/metrics lacks the usage of namespace sized")
	}
	if n, err := strconv.ParseFloat(used[1], 64); err != nil || n <= 0 || n >= 32<<20 {
		t.Errorf("usage of two new 16 MiB volumes is %s, want more than 0 and less than their sizes", used[1])
	}
	if strings.Contains(body, `nri_volumes_volume_limit_bytes{namespace="shop"}`) {
		t.Errorf("a namespace without sized volumes has a limit")
	}
	if !strings.Contains(body, "nri_volumes_node_sized_bytes 3.3554432e+07\n") {
		t.Errorf("/metrics lacks the node's sum of sizes")
	}
	fs := regexp.MustCompile(`\nnri_volumes_store_filesystem_bytes (\S+)\n`).FindStringSubmatch(body)
	if fs == nil {
		t.Fatal("/metrics lacks the size of the store's file system")
	}
	if n, err := strconv.ParseFloat(fs[1], 64); err != nil || n < 32<<20 {
		t.Errorf("store_filesystem_bytes %s", fs[1])
	}
	if _, err := store.Grow("sized", "a", 32<<20); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, `nri_volumes_volume_limit_bytes{namespace="sized"} 5.0331648e+07`+"\n") {
		t.Errorf("/metrics lacks the sum of the sizes of namespace sized after growing a to 32 MiB")
	}
}
