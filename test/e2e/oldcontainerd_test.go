package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestImageVolumeOldContainerd runs the plugin against the older containerd
// of hack/versions.env, which sends NRI no image config digest: the image's
// VOLUME is then found from the mount containerd's own image-volume handling
// made, and that mount is replaced by an anonymous volume with copy-up.
func TestImageVolumeOldContainerd(t *testing.T) {
	harness.RequireRoot(t)
	bins, version := harness.OldRuntime(t)
	bins.NRIVolumes = testBins(t).NRIVolumes
	t.Logf("containerd %s", version)
	ctd := harness.StartContainerd(t, bins, harness.ContainerdOptions{IgnoreImageDefinedVolumes: false})
	ctd.Import(t, dbImage)
	p := harness.StartPlugin(t, ctd, harness.PluginOptions{})
	e := &env{t: t, bins: bins, ctd: ctd, plugin: p, cr: ctd.Crictl(t)}

	pod := e.cr.RunPod("db", "default", "uid-db-old", nil)
	id := e.cr.RunContainer(pod, "db", dbImage.Name, nil, nil)

	anon := e.anonymousVolumes("default")
	if len(anon) != 1 {
		t.Fatalf("anonymous volumes: %v, want one for the image's VOLUME /data", anon)
	}
	if src := e.cr.Mounts(id)["/data"]; src != e.plugin.VolumeDir("default", anon[0]) {
		t.Errorf("/data is mounted from %q, want the anonymous volume %s instead of containerd's own", src, e.plugin.VolumeDir("default", anon[0]))
	}
	// containerd 2.2 copies the image's /data before NRI too, and the
	// volume takes that copy over: no copy-up hook.
	if hooks := createRuntimeHooks(e.cr, id); len(hooks) != 0 {
		t.Errorf("createRuntime hooks %v, want none: containerd's copy is adopted", hooks)
	}
	mounts := e.cr.Exec(id, "cat", "/proc/mounts")
	if n := strings.Count(mounts, " /data "); n != 1 {
		t.Errorf("/data is mounted %d times:\n%s", n, mounts)
	}
	if got := e.cr.Exec(id, "cat", "/data/seed.txt"); got != "seeded by the image\n" {
		t.Errorf("/data/seed.txt = %q", got)
	}
	if got := trim(e.cr.Exec(id, "stat", "-c", "%u:%g %a", "/data", "/data/seed.txt")); got != "999:999 750\n999:999 640" {
		t.Errorf("stat /data /data/seed.txt = %q, want 999:999 750 and 999:999 640", got)
	}
	e.cr.Sh(id, "echo written > /data/w")
	if got := e.volumeFile(anon[0], "w"); got != "written\n" {
		t.Errorf("the anonymous volume holds %q", got)
	}
	e.cr.RmPod(pod)
	if !eventually(func() bool { return len(e.anonymousVolumes("default")) == 0 }) {
		t.Errorf("anonymous volumes left after the pod was removed: %v", e.anonymousVolumes("default"))
	}
}

// volumeFile reads a file of a volume in the default namespace.
func (e *env) volumeFile(name, file string) string {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.plugin.VolumeDir("default", name), file))
	if err != nil {
		e.t.Errorf("%v", err)
	}
	return string(data)
}
