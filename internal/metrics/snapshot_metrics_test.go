package metrics_test

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/metrics"
	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/volumes"
	"github.com/nri-volumes/nri-volumes/volumes/copyup"
)

// metricValue returns the value of the sample line name (with its labels,
// as the exposition writes them) in body, or -1 if there is none.
func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSnapshotAndCloneMetrics: the snapshots of each namespace and the
// bytes they hold, from the ledger, follow snapshot create and rm; clones
// count by how they were copied, those the copy-up hook fills included;
// and, with loop devices, each freeze of a sized volume in use (a snapshot,
// an export) is observed once. The store is written by another Store, as
// the CLI does it in a process of its own.
func TestSnapshotAndCloneMetrics(t *testing.T) {
	root := t.TempDir()
	store, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := metrics.New(func() *volumes.Store { return store }).Handler()
	get(t, h, "/metrics") // the collector starts reading the log

	cli, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, ref := range []struct{ ns, name string }{{"default", "a"}, {"default", "b"}, {"other", "c"}} {
		v, err := cli.Create(ref.ns, ref.name, volumes.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v.Mountpoint, "data"), make([]byte, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, sn := range []struct{ ns, name, snap string }{{"default", "a", "s1"}, {"default", "a", "s2"}, {"default", "b", "s1"}, {"other", "c", "s1"}} {
		if _, err := cli.Snapshots().Create(sn.ns, sn.name, sn.snap, volumes.SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cli.Snapshots().Remove("default", "a", "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Clone("default", "a", "s1", "a2", volumes.CloneOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.Acquire("ctr", []volumes.Request{{Namespace: "default", Name: "a3",
		CreateOptions: volumes.CreateOptions{CloneOf: &volumes.CloneSource{Volume: "b"}}}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.CopyUps().FillClone("default", "a3", copyup.Options{}); err != nil {
		t.Fatal(err)
	}

	_, body := get(t, h, "/metrics")
	if got := metricValue(t, body, `nri_volumes_snapshots{namespace="default"}`); got != 2 {
		t.Errorf("snapshots of default: %v, want 2", got)
	}
	if got := metricValue(t, body, `nri_volumes_snapshots{namespace="other"}`); got != 1 {
		t.Errorf("snapshots of other: %v, want 1", got)
	}
	if got := metricValue(t, body, `nri_volumes_snapshot_bytes{namespace="default"}`); got < 2*64<<10 {
		t.Errorf("snapshot bytes of default: %v, want at least two copies of 64KiB", got)
	}
	if got := metricValue(t, body, `nri_volumes_clones_total{copy="copy"}`); got != 2 {
		t.Errorf("clones copied: %v, want 2 (volume clone, and cloneOf filled by the hook)", got)
	}
	if got := metricValue(t, body, `nri_volumes_clones_total{copy="reflink"}`); got != 0 {
		t.Errorf("clones reflinked: %v, want 0", got)
	}
	if got := metricValue(t, body, `nri_volumes_freeze_duration_seconds_count`); got != 0 {
		t.Errorf("freezes of plain volumes: %v, want none", got)
	}

	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	if _, err := cli.Create("default", "sized", volumes.CreateOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.Acquire("writer", []volumes.Request{{Namespace: "default", Name: "sized"}}, nil); err != nil {
		t.Fatal(err)
	}
	defer cli.Release("writer")
	if _, err := cli.Snapshots().Create("default", "sized", "s1", volumes.SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Export("default", "sized", io.Discard); err != nil {
		t.Fatal(err)
	}
	_, body = get(t, h, "/metrics")
	if got := metricValue(t, body, `nri_volumes_freeze_duration_seconds_count`); got != 2 {
		t.Errorf("freezes: %v, want 2 (a snapshot, an export)", got)
	}
	if got := metricValue(t, body, `nri_volumes_snapshots{namespace="default"}`); got != 3 {
		t.Errorf("snapshots of default: %v, want 3 (the export's is gone)", got)
	}
}
