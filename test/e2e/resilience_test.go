package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// inspectedVolume is the part of `volume inspect` these tests read.
type inspectedVolume struct {
	Name, Namespace, Mountpoint string
	Anonymous                   bool
	UsedBy                      []string
}

// inspect returns `volume inspect NAME` of a volume in the default namespace.
func (e *env) inspect(name string) inspectedVolume {
	e.t.Helper()
	out := e.volume("inspect", name)
	var got []inspectedVolume
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
		e.t.Fatalf("volume inspect %s: %v\n%s", name, err, out)
	}
	sort.Strings(got[0].UsedBy)
	return got[0]
}

// volumeList returns `volume ls -A -q`, sorted.
func (e *env) volumeList() []string {
	e.t.Helper()
	names := strings.Fields(e.volume("ls", "-A", "-q"))
	sort.Strings(names)
	return names
}

// without returns the elements of a that are not in b.
func without(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func sorted(s ...string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

// TestPluginKilledAndRestarted kills the plugin with SIGKILL while pods with
// named, anonymous and image volumes run, changes things behind its back,
// and checks that its Synchronize after the restart puts the store right:
// the removed container no longer holds the named volume, the removed pod's
// anonymous volume is gone, and the running container keeps its volumes,
// their data and its hold on them.
func TestPluginKilledAndRestarted(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.ctd.Import(t, dbImage)
	ann := map[string]string{podKey: "- shared:/shared\n- /scratch"}

	podKeep := e.cr.RunPod("keep", "default", "uid-keep", ann)
	kept := e.cr.RunContainer(podKeep, "db", dbImage.Name, nil, nil)
	e.cr.Sh(kept, "echo shared > /shared/f && echo scratch > /scratch/f && echo data > /data/f")
	anonKeep := e.anonymousVolumes("default") // /scratch and the image's /data

	podCtrGone := e.cr.RunPod("ctr-gone", "default", "uid-ctr-gone", ann)
	ctrGone := e.cr.RunContainer(podCtrGone, "app", appImage, nil, nil)
	anonCtrGone := without(e.anonymousVolumes("default"), anonKeep)

	podGone := e.cr.RunPod("pod-gone", "default", "uid-pod-gone", ann)
	e.cr.RunContainer(podGone, "app", appImage, nil, nil)
	anonPodGone := without(e.anonymousVolumes("default"), append(anonKeep, anonCtrGone...))
	if len(anonKeep) != 2 || len(anonCtrGone) != 1 || len(anonPodGone) != 1 {
		t.Fatalf("anonymous volumes: %v, %v, %v; want 2, 1 and 1", anonKeep, anonCtrGone, anonPodGone)
	}

	e.plugin.Kill()
	e.cr.Rm(ctrGone)
	e.cr.RmPod(podGone)
	// The plugin saw none of that.
	if got := e.inspect("shared").UsedBy; !slices.Contains(got, ctrGone) {
		t.Fatalf("with the plugin down, shared is used by %v; the removed container %s should still be recorded", got, ctrGone)
	}

	e.plugin.Start(t)

	if got, want := e.inspect("shared").UsedBy, []string{kept}; !slices.Equal(got, want) {
		t.Errorf("after the resync shared is used by %v, want %v", got, want)
	}
	res := e.plugin.Volume("rm", "shared")
	if res.Err == nil {
		t.Fatalf("volume rm of shared, used by a running container, succeeded after the restart")
	}
	if !strings.Contains(res.Stderr, kept) || strings.Contains(res.Stderr, ctrGone) {
		t.Errorf("volume rm error should name %s and only it: %q", kept, res.Stderr)
	}
	if !eventually(func() bool {
		return slices.Equal(e.anonymousVolumes("default"), sorted(append(anonKeep, anonCtrGone...)...))
	}) {
		t.Errorf("anonymous volumes after the resync: %v; want %v (the running pod's) and %v (a live pod's, unused)",
			e.anonymousVolumes("default"), anonKeep, anonCtrGone)
	}

	if got := e.cr.State(kept); got != "CONTAINER_RUNNING" {
		t.Errorf("the running container is %s after the plugin restart", got)
	}
	if got := e.cr.Sh(kept, "cat /shared/f /scratch/f /data/f /data/seed.txt"); got != "shared\nscratch\ndata\nseeded by the image\n" {
		t.Errorf("the running container reads %q after the plugin restart", got)
	}
	mounts := e.cr.Mounts(kept)
	for _, target := range []string{"/shared", "/scratch", "/data"} {
		if _, err := os.Stat(filepath.Join(mounts[target], "f")); err != nil {
			t.Errorf("%s of the running container: %v", target, err)
		}
	}
}

// TestContainerdRestartKeepsVolumes restarts containerd under running pods:
// the external plugin reconnects by itself, the running container keeps its
// hold on its volumes, a restarted container gets its anonymous volume back
// and a new pod its named one, and no volume is lost or made twice.
func TestContainerdRestartKeepsVolumes(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.ctd.Import(t, dbImage)
	ann := map[string]string{podKey: "- shared:/shared"}
	podA := e.cr.RunPod("a", "default", "uid-a", ann)
	spec := harness.ContainerSpec{Name: "db", Image: dbImage.Name}
	a, err := e.cr.CreateContainerSpec(podA, spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	e.cr.Start(a)
	podB := e.cr.RunPod("b", "default", "uid-b", ann)
	b := e.cr.RunContainer(podB, "app", appImage, nil, nil)
	e.cr.Sh(a, "echo before > /data/f && echo before > /shared/f")
	before := e.volumeList()
	if len(before) != 2 {
		t.Fatalf("volumes before the restart: %v, want shared and one anonymous", before)
	}

	synced := e.ctd.SyncCount("10-volumes")
	e.ctd.Restart(t)
	e.ctd.WaitSynced(t, "10-volumes", synced)
	if !e.plugin.Running() {
		t.Fatalf("the plugin exited when containerd restarted")
	}
	if log := e.plugin.Log(); !strings.Contains(log, "NRI connection lost; reconnecting") {
		t.Errorf("the plugin log has no reconnect line:\n%s", e.plugin.LogTail(30))
	}

	res := e.plugin.Volume("rm", "shared")
	if res.Err == nil || !strings.Contains(res.Stderr, b) {
		t.Errorf("volume rm shared after the restart: %v; want it refused naming %s", res.Err, b)
	}

	e.cr.Stop(a)
	e.cr.Rm(a)
	spec.Attempt = 1
	a, err = e.cr.CreateContainerSpec(podA, spec)
	if err != nil {
		t.Fatalf("re-create after the restart: %v", err)
	}
	e.cr.Start(a)
	if got := e.cr.Sh(a, "cat /data/f /shared/f"); got != "before\nbefore\n" {
		t.Errorf("the restarted container reads %q", got)
	}
	podC := e.cr.RunPod("c", "default", "uid-c", ann)
	c := e.cr.RunContainer(podC, "app", appImage, nil, nil)
	if got := e.cr.Exec(c, "cat", "/shared/f"); got != "before\n" {
		t.Errorf("a new pod reads %q from shared", got)
	}

	if after := e.volumeList(); !slices.Equal(after, before) {
		t.Errorf("volumes after the restart: %v, before: %v", after, before)
	}
	if got, want := e.inspect("shared").UsedBy, sorted(a, b, c); !slices.Equal(got, want) {
		t.Errorf("shared is used by %v, want %v", got, want)
	}
}

// TestManyPodsOneNewVolume starts 50 pods at once that all name one volume
// that does not exist yet: all start, one volume is made, and it records
// every container.
func TestManyPodsOneNewVolume(t *testing.T) {
	const pods, parallel = 50, 10
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	ann := map[string]string{podKey: "- crowd:/crowd"}

	ids := make([]string, pods)
	errs := make([]error, pods)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("crowd-%02d", i)
			pod, err := e.cr.TryRunPod(harness.PodSpec{Name: name, Namespace: "default", UID: "uid-" + name, Annotations: ann})
			if err != nil {
				errs[i] = err
				return
			}
			ids[i], errs[i] = e.cr.TryRunContainer(pod, harness.ContainerSpec{Name: "app", Image: appImage})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("pod %d: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	running, err := e.cr.RunningContainers()
	if err != nil {
		t.Fatal(err)
	}
	if missing := without(ids, running); len(missing) > 0 {
		t.Errorf("containers not running: %v", missing)
	}
	if got := e.volumeList(); !slices.Equal(got, []string{"crowd"}) {
		t.Errorf("volumes: %v, want only crowd", got)
	}
	if got, want := e.inspect("crowd").UsedBy, sorted(ids...); !slices.Equal(got, want) {
		t.Errorf("crowd is used by %d containers, want all %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	e.cr.Sh(ids[0], "echo first > /crowd/f")
	if got := e.cr.Exec(ids[pods-1], "cat", "/crowd/f"); got != "first\n" {
		t.Errorf("the last pod reads %q from the first pod's write", got)
	}
}

// containerIDInMessage matches a full container ID.
var containerIDInMessage = regexp.MustCompile(`[0-9a-f]{64}`)

// TestRemoveRacesCreate runs `volume rm` and `volume prune -a -f` in a loop
// while containers that name the same volume come and go. A removal that
// wins must never leave a running container on a deleted directory; one that
// loses must say the volume is in use and by whom.
func TestRemoveRacesCreate(t *testing.T) {
	const iterations = 12
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	ann := map[string]string{podKey: "- race:/race"}

	var (
		mu                       sync.Mutex
		removed, refused, pruned int
		unclear                  []string
		stop                     = make(chan struct{})
		wg                       sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rm := e.plugin.Volume("rm", "race")
			prune := e.plugin.Volume("prune", "-a", "-f")
			mu.Lock()
			switch {
			case rm.Err == nil:
				removed++
			case strings.Contains(rm.Stderr, "in use") && containerIDInMessage.MatchString(rm.Stderr),
				strings.Contains(rm.Stderr, `"race"`) && strings.Contains(rm.Stderr, "not found"):
				refused++
			default:
				unclear = append(unclear, "volume rm: "+rm.Err.Error())
			}
			switch {
			case prune.Err != nil:
				unclear = append(unclear, "volume prune: "+prune.Err.Error())
			case strings.Contains(prune.Stdout, "race"):
				pruned++
			}
			mu.Unlock()
		}
	}()
	stopCLI := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopCLI()

	var kept *harness.Pod
	created := 0
	for i := range iterations {
		name := fmt.Sprintf("race-%02d", i)
		pod, err := e.cr.TryRunPod(harness.PodSpec{Name: name, Namespace: "default", UID: "uid-" + name, Annotations: ann})
		if err != nil {
			t.Fatalf("run pod %s: %v", name, err)
		}
		if _, err := e.cr.TryRunContainer(pod, harness.ContainerSpec{Name: "app", Image: appImage}); err != nil {
			if !strings.Contains(err.Error(), `"race"`) {
				t.Errorf("pod %s: the creation failed without naming the volume: %v", name, err)
			}
			t.Logf("pod %s: creation failed: %v", name, err)
		} else {
			created++
		}
		checkRunningVolumes(t, e, "/race", i)
		// Every other pod outlives the next one, so that removals race both
		// against a volume in use and against one that has just been freed.
		if kept != nil {
			if err := e.cr.TryRmPod(kept); err != nil {
				t.Fatalf("remove pod: %v", err)
			}
			kept = nil
		}
		if i%2 == 0 {
			kept = pod
		} else if err := e.cr.TryRmPod(pod); err != nil {
			t.Fatalf("remove pod: %v", err)
		}
	}
	stopCLI()
	checkRunningVolumes(t, e, "/race", iterations)

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d containers created; volume rm removed %d times and was refused %d times; prune removed race %d times",
		created, removed, refused, pruned)
	for _, u := range unclear {
		t.Errorf("unclear failure: %s", u)
	}
	if created < iterations/2 {
		t.Errorf("only %d of %d containers were created", created, iterations)
	}
	if removed+pruned == 0 || refused == 0 {
		t.Errorf("the race did not happen: %d removals, %d refusals", removed+pruned, refused)
	}
}

// checkRunningVolumes checks, from the host, that every running container's
// mount at target is a live volume directory: the directory exists and what
// the container writes there shows up in it.
func checkRunningVolumes(t *testing.T, e *env, target string, round int) {
	t.Helper()
	running, err := e.cr.RunningContainers()
	if err != nil {
		t.Fatalf("list running containers: %v", err)
	}
	for _, id := range running {
		mounts, err := e.cr.TryMounts(id)
		if err != nil {
			t.Fatalf("%v", err)
		}
		src, ok := mounts[target]
		if !ok {
			t.Errorf("running container %s has no mount at %s", id, target)
			continue
		}
		if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
			t.Errorf("running container %s: its volume directory %s: %v", id, src, err)
			continue
		}
		probe := fmt.Sprintf("probe-%d-%s", round, id[:12])
		if _, err := e.cr.ExecErr(id, "touch", target+"/"+probe); err != nil {
			t.Errorf("running container %s cannot write to %s: %v", id, target, err)
			continue
		}
		if _, err := os.Stat(filepath.Join(src, probe)); err != nil {
			t.Errorf("running container %s writes to a %s that is not %s any more: %v", id, target, src, err)
		}
	}
}
