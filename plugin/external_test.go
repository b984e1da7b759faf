package plugin_test

import (
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// external: true on a named volume, as compose's external: a container
// whose volume does not exist on this node fails with a message that says
// so, instead of starting with a new, empty volume; once the volume is
// there (made, pulled, restored), the same annotation works.
func TestExternalVolumeMustExist(t *testing.T) {
	rt := newRuntime(t, nil)
	rt.connect()
	key := plugin.VolumesKey + "/pod"
	ann := map[string]string{key: "- {source: pgdata, target: /data, external: true}\n- /scratch"}
	_, err := rt.create(newPod("p1", "shop", ann), newContainer("c1", "p1", "db"))
	for _, want := range []string{key, "pgdata", "external", "does not exist"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("CreateContainer() with a missing external volume: %v; want an error with %q", err, want)
		}
	}
	t.Logf("the refusal reads: %v", err)
	if vols, err := rt.store().List(volumes.ListOptions{AllNamespaces: true}); err != nil || len(vols) != 0 {
		t.Fatalf("volumes left behind: %+v, %v", vols, err)
	}

	if _, err := rt.store().Create("shop", "pgdata", volumes.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	adj, err := rt.create(newPod("p1", "shop", ann), newContainer("c1", "p1", "db"))
	if err != nil {
		t.Fatalf("CreateContainer() once the volume exists: %v", err)
	}
	if m := findMount(adj, "/data"); m == nil || !strings.HasSuffix(m.Source, "/shop/pgdata/_data") {
		t.Fatalf("mount /data = %+v", m)
	}

	for _, bad := range []string{
		"- {target: /data, external: true}",
		"- {source: v, target: /data, external: true, labels: {a: b}}",
		"- {source: v, target: /data, external: true, size: 1Gi}",
		"- {type: tmpfs, target: /data, external: true}",
	} {
		if _, err := plugin.ParseVolumes(key, bad, rt.cfg.Tmpfs); err == nil || !strings.Contains(err.Error(), "external") {
			t.Errorf("ParseVolumes(%q) = %v, want an error about external", bad, err)
		}
	}
}
