package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestVolumeExportImportInUse exports a volume while a container writes to
// it, imports the tar into a new volume, and reads it back in another pod.
func TestVolumeExportImportInUse(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	pod := e.cr.RunPod("app", "default", "uid-app", map[string]string{podKey: "- data:/data"})
	writer := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	e.cr.Sh(writer, "mkdir -p /data/db && echo rows > /data/db/table && chown -R 1000:1001 /data/db && "+
		"chmod 0640 /data/db/table && ln /data/db/table /data/hard && ln -s db/table /data/link")
	tarPath := filepath.Join(t.TempDir(), "data.tar")
	e.volume("export", "data", "-o", tarPath)

	e.volume("create", "restored")
	e.volume("import", "restored", tarPath)
	fstree.Same(t, "restored volume", fstree.Snapshot(t, e.plugin.VolumeDir("default", "data")),
		fstree.Snapshot(t, e.plugin.VolumeDir("default", "restored")))

	pod2 := e.cr.RunPod("reader", "default", "uid-reader", map[string]string{podKey: "- restored:/data"})
	reader := e.cr.RunContainer(pod2, "app", appImage, nil, nil)
	if got := trim(e.cr.Sh(reader, "stat -c '%u:%g %a %i' /data/db/table; stat -c '%i' /data/hard; readlink /data/link; cat /data/link")); !regexp.MustCompile(`^1000:1001 640 (\d+)\n(\d+)\ndb/table\nrows$`).MatchString(got) {
		t.Errorf("restored data in a container:\n%s", got)
	} else if m := regexp.MustCompile(`\d+`).FindAllString(got, -1); m[3] != m[4] {
		t.Errorf("the hard link is not one inode with the file: %s", got)
	}
	if res := e.plugin.Volume("import", "restored", tarPath); res.Err == nil || !strings.Contains(res.Stderr, "in use by container(s) "+reader) {
		t.Errorf("import into a volume the reader uses: %v %q, want a refusal naming container %s", res.Err, res.Stderr, reader)
	}
	e.volume("create", "filled")
	if err := os.WriteFile(filepath.Join(e.plugin.VolumeDir("default", "filled"), "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res := e.plugin.Volume("import", "filled", tarPath); res.Err == nil || !strings.Contains(res.Stderr, "empty volume") {
		t.Errorf("import into a filled volume: %v %q", res.Err, res.Stderr)
	}
}

// metric returns the value of one series in a Prometheus text exposition.
func metric(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Errorf("/metrics has no %s", series)
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Errorf("%s: %v", series, err)
	}
	return v
}

// TestMetricsScrape scrapes a running plugin as Prometheus would, after it
// gave containers volumes and copied up an image's VOLUME, after a copy-up
// that the pod's budget refused, and across a containerd restart.
func TestMetricsScrape(t *testing.T) {
	bins := testBins(t)
	ctd := harness.StartContainerd(t, bins, harness.ContainerdOptions{})
	ctd.Import(t, harness.Image{Name: appImage, Entrypoint: []string{"/bin/sleep", "2147483647"}})
	ctd.Import(t, dbImage)
	// One copy of dbImage's /data (20 bytes) fits the pod's budget, two not.
	p := harness.StartPlugin(t, ctd, harness.PluginOptions{Metrics: true,
		Config: harness.PluginConfig{Extra: "limits: {copyUpMaxSizePerPod: 30}\n"}})
	e := &env{t: t, bins: bins, ctd: ctd, plugin: p, cr: ctd.Crictl(t)}

	if code, body, err := p.Get("/healthz"); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz: %d %q %v", code, body, err)
	}
	pod := e.cr.RunPod("db", "shop", "uid-db", map[string]string{podKey: "- cache:/cache"})
	id, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "db", Image: dbImage.Name})
	if err != nil {
		t.Fatal(err)
	}
	e.cr.Start(id)
	if got := e.cr.Exec(id, "cat", "/data/seed.txt"); got != "seeded by the image\n" {
		t.Errorf("copy-up did not happen: %q", got)
	}
	bad := e.cr.RunPod("bad", "shop", "uid-bad", map[string]string{podKey: "- ../x:/x"})
	if _, err := e.cr.CreateContainer(bad, "app", appImage, nil, nil); err == nil {
		t.Fatal("a bad annotation was accepted")
	}

	code, body, err := p.Get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for series, want := range map[string]float64{
		`nri_volumes_nri_requests_total{event="CreateContainer",result="ok"}`:    1,
		`nri_volumes_nri_requests_total{event="CreateContainer",result="error"}`: 1,
		`nri_volumes_volumes{kind="named",namespace="shop"}`:                     1,
		`nri_volumes_volumes{kind="anonymous",namespace="shop"}`:                 1,
		`nri_volumes_copyup_hooks_total`:                                         1,
		`nri_volumes_nri_connected`:                                              1,
		// Two volumes filled: the image's /data, and /cache, empty in
		// the image once runc made the mount point.
		`nri_volumes_copyups_total{result="ok"}`:     2,
		`nri_volumes_copyups_total{result="failed"}`: 0,
		`nri_volumes_copyup_bytes_total`:             float64(len("seeded by the image\n")),
		`nri_volumes_copyup_duration_seconds_count`:  2,
	} {
		if got := metric(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := metric(t, body, `nri_volumes_nri_request_duration_seconds_count{event="CreateContainer"}`); got != 2 {
		t.Errorf("CreateContainer latency count = %v, want 2", got)
	}
	if got := metric(t, body, "nri_volumes_store_lock_wait_seconds_count"); got < 1 {
		t.Errorf("store lock waits observed: %v", got)
	}

	second, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "db2", Image: dbImage.Name})
	if err != nil {
		t.Fatal(err)
	}
	if res := e.cr.Run("start", second); res.Err == nil || !strings.Contains(res.Err.Error(), "limits.copyUpMaxSizePerPod") {
		t.Fatalf("a copy-up past the pod's budget: %v, want a refusal naming limits.copyUpMaxSizePerPod", res.Err)
	}
	_, body, err = p.Get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for series, want := range map[string]float64{
		`nri_volumes_copyups_total{result="ok"}`:                 2,
		`nri_volumes_copyups_total{result="failed"}`:             1,
		`nri_volumes_copyup_failures_total{reason="pod-budget"}`: 1,
		`nri_volumes_copyup_failures_total{reason="limit"}`:      0,
		`nri_volumes_copyup_bytes_total`:                         float64(len("seeded by the image\n")),
		`nri_volumes_copyup_duration_seconds_count`:              3,
	} {
		if got := metric(t, body, series); got != want {
			t.Errorf("after the refused copy-up: %s = %v, want %v", series, got, want)
		}
	}

	ctd.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, _ := p.Get("/healthz")
		_, body, _ := p.Get("/metrics")
		if code == http.StatusOK && strings.Contains(body, "\nnri_volumes_nri_reconnects_total 1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a containerd restart: /healthz %d, metrics:\n%s\nplugin log:\n%s", code, grepLines(body, "nri_volumes_nri_"), p.LogTail(30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
