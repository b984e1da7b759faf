package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
)

// readLines returns the lines of a reference list, or nil if it is missing.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func usedBy(t *testing.T, s *Store, name string) []string {
	t.Helper()
	v, err := s.Get("default", name)
	if err != nil {
		t.Fatal(err)
	}
	if v.UsedBy == nil {
		t.Fatalf("%s: UsedBy is nil, want a list", name)
	}
	return v.UsedBy
}

// TestReferencesLiveOutsideVolumeJSON checks the layout: Acquire and Release
// leave an existing volume's volume.json alone and keep the container's list
// in .refs.
func TestReferencesLiveOutsideVolumeJSON(t *testing.T) {
	s, root := newStore(t)
	if _, err := s.Create("default", "data", CreateOptions{Labels: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(root, volumesDir, "default", "data", metaFile)
	before, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"UsedBy"`, `"Mountpoint"`} {
		if strings.Contains(string(before), field) {
			t.Errorf("volume.json holds %s:\n%s", field, before)
		}
	}
	vols, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "data"}, anon("pod1", "app", "/a")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(vols[0].UsedBy, []string{"c1"}) || !slices.Equal(vols[1].UsedBy, []string{"c1"}) {
		t.Errorf("Acquire returned UsedBy %v and %v, want [c1]", vols[0].UsedBy, vols[1].UsedBy)
	}
	if after, _ := os.ReadFile(meta); string(after) != string(before) {
		t.Errorf("Acquire rewrote volume.json of an existing volume:\n%s", after)
	}
	anonKey := "default/" + vols[1].Name
	if got, want := readLines(t, filepath.Join(root, volumesDir, refsDir, "c1")), sortedSet(setOf([]string{anonKey, "default/data"})); !slices.Equal(got, want) {
		t.Errorf(".refs/c1 = %v, want %v", got, want)
	}
	if got, want := readLines(t, filepath.Join(root, volumesDir, podsDir, "pod1")), []string{anonKey}; !slices.Equal(got, want) {
		t.Errorf(".pods/pod1 = %v, want %v", got, want)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(meta); string(after) != string(before) {
		t.Errorf("Release rewrote volume.json:\n%s", after)
	}
	if got := dirNames(t, filepath.Join(root, volumesDir, refsDir)); len(got) != 0 {
		t.Errorf(".refs after Release = %v, want empty", got)
	}
	if got := usedBy(t, s, "data"); len(got) != 0 {
		t.Errorf("UsedBy after Release = %v", got)
	}
}

// TestOldVolumeJSONWithUsedBy reads a volume.json written by an earlier
// version, which recorded references in it: they are ignored.
func TestOldVolumeJSONWithUsedBy(t *testing.T) {
	s, root := newStore(t)
	if err := os.MkdirAll(filepath.Join(root, volumesDir, "default", "old", dataDir), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, volumesDir, "default", "old", metaFile), `{
  "Name": "old", "Namespace": "default", "Mountpoint": "/elsewhere/_data",
  "CreatedAt": "2024-05-01T10:00:00Z", "Labels": {"app": "db"}, "Anonymous": false,
  "UsedBy": ["ghost"]
}`)
	v, err := s.Get("default", "old")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.UsedBy) != 0 || v.Labels["app"] != "db" || v.CreatedAt.Year() != 2024 || !strings.HasSuffix(v.Mountpoint, "/default/old/_data") {
		t.Errorf("Get = %+v", v)
	}
	if err := s.Remove("default", "old"); err != nil {
		t.Errorf("Remove of a volume whose old volume.json names a container: %v", err)
	}
}

// TestRefsSurviveReopen checks that another Store on the same root, and a
// reopened one, see the references.
func TestRefsSurviveReopen(t *testing.T) {
	s, root := newStore(t)
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "v"}}, nil); err != nil {
		t.Fatal(err)
	}
	other := openStore(t, root)
	if got := usedBy(t, other, "v"); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("another Store sees UsedBy %v, want [c1]", got)
	}
	if _, _, err := other.Acquire("c2", []Request{{Namespace: "default", Name: "v"}}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	other.Close()
	again := openStore(t, root)
	if got := usedBy(t, again, "v"); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("after reopening UsedBy = %v, want [c1 c2]", got)
	}
	vols, err := again.List(ListOptions{Namespace: "default"})
	if err != nil || len(vols) != 1 || !slices.Equal(vols[0].UsedBy, []string{"c1", "c2"}) {
		t.Errorf("List after reopening = %+v, %v", vols, err)
	}
}

// TestRefsKilledMidWrite simulates a process killed while it replaced a
// list: the temporary file it left is not read, and Open removes it. A list
// torn by a crash of the node counts for nothing.
func TestRefsKilledMidWrite(t *testing.T) {
	s, root := newStore(t)
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "v"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("default", "w", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	refs := filepath.Join(root, volumesDir, refsDir)
	pods := filepath.Join(root, volumesDir, podsDir)
	// A kill before the rename: the new list is half-written in a temporary file.
	writeFile(t, filepath.Join(refs, tmpPrefix+"0123456789abcdef"), "default/v\ndefault/w\ndefa")
	writeFile(t, filepath.Join(pods, tmpPrefix+"0123456789abcdef"), "default/")
	// A node crash tore other lists.
	writeFile(t, filepath.Join(refs, "torn"), "default/w\ndefault/")
	writeFile(t, filepath.Join(refs, "garbage"), "\x00\x00\x00\n")

	s2 := openStore(t, root)
	if got := dirNames(t, refs); !slices.Equal(got, []string{"c1", "garbage", "torn"}) {
		t.Errorf(".refs after Open = %v, want the temporary file gone", got)
	}
	if got := dirNames(t, pods); len(got) != 0 {
		t.Errorf(".pods after Open = %v, want the temporary file gone", got)
	}
	if got := usedBy(t, s2, "v"); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("v used by %v, want the old list: [c1]", got)
	}
	if got := usedBy(t, s2, "w"); len(got) != 0 {
		t.Errorf("w used by %v, want nobody: torn lists count for nothing", got)
	}
	if err := s2.Remove("default", "w"); err != nil {
		t.Errorf("Remove of a volume only a torn list names: %v", err)
	}
	probs, err := s2.Check()
	if err != nil || len(probs) != 0 {
		t.Errorf("Check = %+v, %v; want no problem", probs, err)
	}
}

// TestReleaseUnknownWritesNothing checks that releasing a container that
// holds nothing changes nothing on disk, not even the generation.
func TestReleaseUnknownWritesNothing(t *testing.T) {
	s, root := newStore(t)
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "v"}}, nil); err != nil {
		t.Fatal(err)
	}
	gen, _ := s.readGen()
	before := fstree.Snapshot(t, root, lockFile)
	for _, id := range []string{"unknown", "c2"} {
		if err := s.Release(id); err != nil {
			t.Fatal(err)
		}
	}
	fstree.Same(t, "store", before, fstree.Snapshot(t, root, lockFile))
	if now, _ := s.readGen(); now != gen {
		t.Errorf("generation went from %d to %d", gen, now)
	}
	for _, bad := range []string{"", "../c1", "a/b", ".tmp-x", "-x", strings.Repeat("a", 129)} {
		if err := s.Release(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Release(%q) = %v, want ErrInvalid", bad, err)
		}
		if _, _, err := s.Acquire(bad, []Request{{Namespace: "default", Name: "v"}}, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("Acquire(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, _, err := s.Acquire("c9", []Request{{Namespace: "default", Owner: &Owner{PodSandboxID: "../p", Target: "/x"}}}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Acquire with pod sandbox ID ../p = %v, want ErrInvalid", err)
	}
	if _, err := s.RemovePodVolumes("../p"); !errors.Is(err, ErrInvalid) {
		t.Errorf("RemovePodVolumes(../p) = %v, want ErrInvalid", err)
	}
	fstree.Same(t, "store", before, fstree.Snapshot(t, root, lockFile))
}

// TestAcquireMergesAndRestoresRefs checks that a repeated Acquire adds to
// what the container holds, and that a failed one leaves its list as it was.
func TestAcquireMergesAndRestoresRefs(t *testing.T) {
	s, root := newStore(t)
	list := filepath.Join(root, volumesDir, refsDir, "c1")
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "a"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "b"}, {Namespace: "default", Name: "a"}}, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"default/a", "default/b"}
	if got := readLines(t, list); !slices.Equal(got, want) {
		t.Fatalf(".refs/c1 = %v, want %v", got, want)
	}
	if err := os.MkdirAll(filepath.Join(root, volumesDir, "default", "broken"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "new"}, anon("pod1", "app", "/x"), {Namespace: "default", Name: "broken"}}, nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Acquire with a broken volume = %v, want ErrNotFound", err)
	}
	if got := readLines(t, list); !slices.Equal(got, want) {
		t.Errorf(".refs/c1 after a failed Acquire = %v, want %v", got, want)
	}
	if got := dirNames(t, filepath.Join(root, volumesDir, podsDir)); len(got) != 0 {
		t.Errorf(".pods after a failed Acquire = %v, want empty", got)
	}
	vols, _ := s.List(ListOptions{Namespace: "default"})
	if got := names(vols); !slices.Equal(got, []string{"default/a", "default/b"}) {
		t.Errorf("volumes after a failed Acquire = %v", got)
	}
	for _, v := range vols {
		if !slices.Equal(v.UsedBy, []string{"c1"}) {
			t.Errorf("%s used by %v, want [c1]", v.Name, v.UsedBy)
		}
	}
}

// TestRemovePodVolumesPodList removes a pod's anonymous volumes with its
// list in .pods. Without one (lost in a crash of the node) RemovePodVolumes,
// which runs inside an NRI request, never scans the store: RemoveOrphans
// removes them and writes the list again.
func TestRemovePodVolumesPodList(t *testing.T) {
	for _, withList := range []bool{true, false} {
		t.Run(fmt.Sprintf("list=%v", withList), func(t *testing.T) {
			s, root := newStore(t)
			a, b, other := anon("pod1", "app", "/a"), anon("pod1", "app", "/b"), anon("pod2", "app", "/a")
			if _, _, err := s.Acquire("c1", []Request{a, b, {Namespace: "default", Name: "named"}}, nil); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Acquire("c2", []Request{b, other}, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.Release("c1"); err != nil {
				t.Fatal(err)
			}
			podList := filepath.Join(root, volumesDir, podsDir, "pod1")
			keyA, keyB := "default/"+AnonymousName(*a.Owner), "default/"+AnonymousName(*b.Owner)
			if got := readLines(t, podList); !slices.Equal(got, sortedSet(setOf([]string{keyA, keyB}))) {
				t.Fatalf(".pods/pod1 = %v, want %s and %s", got, keyA, keyB)
			}
			if !withList {
				if err := os.Remove(podList); err != nil {
					t.Fatal(err)
				}
				s.Close()
				s = openStore(t, root)
			}
			removed, err := s.RemovePodVolumes("pod1")
			if err != nil {
				t.Fatal(err)
			}
			if !withList {
				if len(removed) != 0 {
					t.Fatalf("RemovePodVolumes without a list removed %v", removed)
				}
				orphans, err := s.RemoveOrphans(func(pod string) bool { return pod == "pod2" }, false)
				if err != nil {
					t.Fatal(err)
				}
				removed = nil
				for _, k := range orphans {
					removed = append(removed, strings.TrimPrefix(k, "default/"))
				}
			}
			if want := []string{AnonymousName(*a.Owner)}; !slices.Equal(removed, want) {
				t.Errorf("removed %v, want %v (/b is in use)", removed, want)
			}
			// The list keeps the volume still in use.
			if got := readLines(t, podList); !slices.Equal(got, []string{keyB}) {
				t.Errorf(".pods/pod1 = %v, want [%s]", got, keyB)
			}
			if err := s.Release("c2"); err != nil {
				t.Fatal(err)
			}
			removed, err = s.RemovePodVolumes("pod1")
			if err != nil || !slices.Equal(removed, []string{AnonymousName(*b.Owner)}) {
				t.Errorf("second RemovePodVolumes = %v, %v", removed, err)
			}
			if _, err := os.Stat(podList); !os.IsNotExist(err) {
				t.Errorf(".pods/pod1 left behind: %v", err)
			}
			vols, _ := s.List(ListOptions{Namespace: "default"})
			if want := sortedSet(setOf([]string{"default/named", "default/" + AnonymousName(*other.Owner)})); !slices.Equal(names(vols), want) {
				t.Errorf("left %v, want %v", names(vols), want)
			}
			if removed, err := s.RemovePodVolumes("pod-unknown"); err != nil || len(removed) != 0 {
				t.Errorf("RemovePodVolumes of a pod without volumes = %v, %v", removed, err)
			}
		})
	}
}

// TestRemovePodVolumesChecksOwner plants a pod list that names volumes of
// another pod and a named volume: only the pod's own anonymous volumes go.
func TestRemovePodVolumesChecksOwner(t *testing.T) {
	s, root := newStore(t)
	mine, theirs := anon("pod1", "app", "/a"), anon("pod2", "app", "/a")
	if _, _, err := s.Acquire("c1", []Request{mine, theirs}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("default", "named", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	writeFile(t, filepath.Join(root, volumesDir, podsDir, "pod1"),
		"default/"+AnonymousName(*mine.Owner)+"\ndefault/"+AnonymousName(*theirs.Owner)+"\ndefault/named\ndefault/gone\n")
	s = openStore(t, root)
	removed, err := s.RemovePodVolumes("pod1")
	if err != nil || !slices.Equal(removed, []string{AnonymousName(*mine.Owner)}) {
		t.Errorf("RemovePodVolumes = %v, %v; want only pod1's volume", removed, err)
	}
	vols, _ := s.List(ListOptions{Namespace: "default"})
	if len(vols) != 2 {
		t.Errorf("left %v, want pod2's volume and named", names(vols))
	}
}

// TestReconcileRewritesLists checks that Reconcile leaves .refs with exactly
// the containers it is given and .pods with exactly the pods that still have
// anonymous volumes, removing symlinks without following them.
func TestReconcileRewritesLists(t *testing.T) {
	s, root := newStore(t)
	live, dead := anon("live", "app", "/a"), anon("dead", "app", "/a")
	if _, _, err := s.Acquire("c1", []Request{live, {Namespace: "default", Name: "named"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("c2", []Request{dead}, nil); err != nil {
		t.Fatal(err)
	}
	refs := filepath.Join(root, volumesDir, refsDir)
	pods := filepath.Join(root, volumesDir, podsDir)
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "precious"), "default/named\n")
	writeFile(t, filepath.Join(refs, "torn"), "default/na")
	writeFile(t, filepath.Join(pods, "gone-pod"), "default/"+strings.Repeat("0", 64)+"\n")
	for _, dir := range []string{refs, pods} {
		if err := os.Symlink(filepath.Join(outside, "precious"), filepath.Join(dir, "c3")); err != nil {
			t.Fatal(err)
		}
	}
	keyLive := "default/" + AnonymousName(*live.Owner)
	// As after a restart: the store reads the lists as they are.
	s.Close()
	s = openStore(t, root)
	if err := reconcile(s, map[string][]string{keyLive: {"c1"}, "default/named": {"c1", "c4"}, "default/nothere": {"c5"}},
		map[string]bool{"live": true}, false); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, refs); !slices.Equal(got, []string{"c1", "c4"}) {
		t.Errorf(".refs = %v, want [c1 c4]", got)
	}
	if got := readLines(t, filepath.Join(refs, "c4")); !slices.Equal(got, []string{"default/named"}) {
		t.Errorf(".refs/c4 = %v", got)
	}
	if got := dirNames(t, pods); !slices.Equal(got, []string{"live"}) {
		t.Errorf(".pods = %v, want [live]", got)
	}
	if got, _ := os.ReadFile(filepath.Join(outside, "precious")); string(got) != "default/named\n" {
		t.Errorf("file behind a planted symlink changed: %q", got)
	}
	if _, err := s.Get("default", AnonymousName(*dead.Owner)); !errors.Is(err, ErrNotFound) {
		t.Errorf("the dead pod's unused volume: %v, want it removed", err)
	}
	if got := usedBy(t, s, "named"); !slices.Equal(got, []string{"c1", "c4"}) {
		t.Errorf("named used by %v", got)
	}
	// A reopened store agrees.
	s2 := openStore(t, root)
	if got := usedBy(t, s2, "named"); !slices.Equal(got, []string{"c1", "c4"}) {
		t.Errorf("after reopening named is used by %v", got)
	}
	// A pod without a list has no volumes to remove.
	if removed, err := s.RemovePodVolumes("another-pod"); err != nil || len(removed) != 0 {
		t.Errorf("RemovePodVolumes = %v, %v", removed, err)
	}
}

// TestPlantedSymlinksInLists plants symlinks where lists go: they are never
// read through nor written through.
func TestPlantedSymlinksInLists(t *testing.T) {
	s, root := newStore(t)
	outside := t.TempDir()
	target := filepath.Join(outside, "precious")
	writeFile(t, target, "default/v\n")
	if err := os.Symlink(target, filepath.Join(root, volumesDir, refsDir, "c1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(root, volumesDir, podsDir, "pod1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("default", "v", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := usedBy(t, s, "v"); len(got) != 0 {
		t.Errorf("a symlinked list was read: v used by %v", got)
	}
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "w"}, anon("pod1", "app", "/x")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemovePodVolumes("pod1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "default/v\n" {
		t.Errorf("written through a planted symlink: %q", got)
	}
	for _, dir := range []string{refsDir, podsDir} {
		if got := dirNames(t, filepath.Join(root, volumesDir, dir)); len(got) != 0 {
			t.Errorf("%s = %v, want empty", dir, got)
		}
	}
	// The store's directories themselves replaced by symlinks: Open puts
	// real ones back and never writes behind the links.
	s.Close()
	for _, dir := range []string{refsDir, podsDir} {
		p := filepath.Join(root, volumesDir, dir)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, p); err != nil {
			t.Fatal(err)
		}
	}
	s = openStore(t, root)
	if _, _, err := s.Acquire("c2", []Request{{Namespace: "default", Name: "v"}, anon("pod2", "app", "/x")}, nil); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, outside); !slices.Equal(got, []string{"precious"}) {
		t.Errorf("the store wrote behind a symlinked directory: %v", got)
	}
	for _, dir := range []string{refsDir, podsDir} {
		if st, err := os.Lstat(filepath.Join(root, volumesDir, dir)); err != nil || !st.IsDir() {
			t.Errorf("%s is not a directory again: %v", dir, err)
		}
	}
}

// TestConcurrentAcquireOneNewVolume has containers of two Stores on one root
// acquire one volume that does not exist yet: it is made once and every
// container holds it.
func TestConcurrentAcquireOneNewVolume(t *testing.T) {
	root := t.TempDir()
	stores := []*Store{openStore(t, root), openStore(t, root)}
	const n = 16
	results := make([]*Volume, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req := Request{Namespace: "default", Name: "shared", CreateOptions: CreateOptions{Labels: map[string]string{"by": fmt.Sprint(i)}}}
			vols, _, err := stores[i%2].Acquire(fmt.Sprintf("ctr%02d", i), []Request{req}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = vols[0]
		}(i)
	}
	wg.Wait()
	var want []string
	for i := 0; i < n; i++ {
		want = append(want, fmt.Sprintf("ctr%02d", i))
	}
	for _, s := range stores {
		v, err := s.Get("default", "shared")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(v.UsedBy, want) {
			t.Errorf("UsedBy = %v, want all %d containers", v.UsedBy, n)
		}
		for i, r := range results {
			if r != nil && (r.Labels["by"] != v.Labels["by"] || !r.CreatedAt.Equal(v.CreatedAt)) {
				t.Errorf("container %d got volume %+v, the store has %+v: made more than once", i, r, v)
			}
		}
	}
	if got := dirNames(t, filepath.Join(root, volumesDir, "default")); !slices.Equal(got, []string{"shared"}) {
		t.Errorf("namespace holds %v", got)
	}
	if got := dirNames(t, filepath.Join(root, volumesDir, refsDir)); !slices.Equal(got, want) {
		t.Errorf(".refs = %v, want one list per container", got)
	}
}

// TestVolumeForMountSource maps mount sources back to volumes under a root
// reached through a symlink: both spellings of ROOT are accepted, and
// nothing that is not exactly a volume's _data is taken for one.
func TestVolumeForMountSource(t *testing.T) {
	disk := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(disk, link); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, link)
	real, err := filepath.EvalSymlinks(disk)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		source   string
		ns, name string
	}{
		{real + "/volumes/shop/redis/_data", "shop", "redis"},
		{link + "/volumes/shop/redis/_data", "shop", "redis"},
		{link + "/volumes/shop/redis/_data/", "shop", "redis"},
		{link + "/volumes/shop/redis", "", ""},
		{link + "/volumes/shop/redis/_data/sub", "", ""},
		{link + "/volumes/.refs/x/_data", "", ""},
		{link + "/volumes/shop/.tmp-rm-1/_data", "", ""},
		{link + "/volumes/shop/../../etc/_data", "", ""},
		{"/elsewhere/volumes/shop/redis/_data", "", ""},
	} {
		ns, name, ok := s.Paths().VolumeForMountSource(tc.source)
		if ns != tc.ns || name != tc.name || ok != (tc.name != "") {
			t.Errorf("VolumeForMountSource(%q) = %q, %q, %v; want %q, %q", tc.source, ns, name, ok, tc.ns, tc.name)
		}
	}
}
