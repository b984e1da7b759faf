package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestPulledVolumeOnAnotherNode: node A pushes a volume; on node B (a real
// containerd with the plugin) a pod that marks it external: true fails
// while the volume is not there, with a message that says so, and once it
// is pulled, the pod starts with A's data: owners, modes, links.
func TestPulledVolumeOnAnotherNode(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	reg := harness.StartRegistry(t)
	a := newNode(t, e.bins.NRIVolumes, reg)
	a.must("create", "pgdata")
	fillVolume(t, a.data("pgdata"), 10, 100)
	ref := reg.Host + "/nodes/pgdata:1"
	a.must("push", "pgdata", ref)

	ann := map[string]string{podKey: "- {source: pgdata, target: /data, external: true}"}
	pod := e.cr.RunPod("db", "default", "uid-db", ann)
	if _, err := e.cr.CreateContainer(pod, "db", appImage, nil, nil); err == nil ||
		!strings.Contains(err.Error(), "external") || !strings.Contains(err.Error(), "does not exist on this node") {
		t.Fatalf("container with a missing external volume: %v", err)
	}
	if names := e.volumeList(); len(names) != 0 {
		t.Fatalf("volumes on node B after the refusal: %v", names)
	}

	if res := e.plugin.Volume("pull", ref, "pgdata", "--auth-file", reg.AuthFile, "--ca-file", reg.CAFile); res.Err != nil {
		t.Fatalf("pull on node B: %v", res.Err)
	}
	ctr := e.cr.RunContainer(pod, "db", appImage, nil, nil)
	fstree.Same(t, "volume pulled on node B", fullTree(t, a.data("pgdata")), fullTree(t, e.plugin.VolumeDir("default", "pgdata")))
	got := trim(e.cr.Sh(ctr, "stat -c '%u:%g %a' /data/db/table /data/db; cat /data/hard; echo; readlink /data/rel-link; readlink /data/abs-link; "+
		"stat -c '%i' /data/hard /data/db/table | uniq | wc -l"))
	// busybox's stat prints the permission bits only (no set-id bits).
	want := "1000:1001 750\n999:999 700\nrows\ndb/table\n/etc/shadow\n1"
	if got != want {
		t.Errorf("pulled volume in node B's pod:\n%s\nwant:\n%s", got, want)
	}

	// In use on node B: push is refused, naming the container, unless --live.
	creds := []string{"--auth-file", reg.AuthFile, "--ca-file", reg.CAFile}
	back := reg.Host + "/nodes/pgdata:2"
	if res := e.plugin.Volume("push", append([]string{"pgdata", back}, creds...)...); res.Err == nil ||
		!strings.Contains(res.Stderr, "in use") || !strings.Contains(res.Stderr, ctr) || !strings.Contains(res.Stderr, "--live") {
		t.Errorf("push of a volume in use: %v %q", res.Err, res.Stderr)
	}
	e.cr.Sh(ctr, "echo more > /data/db/more")
	if res := e.plugin.Volume("push", append([]string{"--live", "pgdata", back}, creds...)...); res.Err != nil {
		t.Errorf("push --live: %v", res.Err)
	}
	a.must("pull", back, "again")
	if data, err := os.ReadFile(filepath.Join(a.data("again"), "db", "more")); err != nil || string(data) != "more\n" {
		t.Errorf("node B's write, pushed live and pulled on A: %q %v", data, err)
	}
}
