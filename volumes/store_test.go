package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

func openStore(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(root)
	if err != nil {
		t.Fatalf("Open(%q): %v", root, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	root := t.TempDir()
	return openStore(t, root), root
}

func names(vols []*Volume) []string {
	var out []string
	for _, v := range vols {
		out = append(out, v.Namespace+"/"+v.Name)
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestValidateName(t *testing.T) {
	long := strings.Repeat("a", 129)
	tests := []struct {
		name string
		ok   bool
	}{
		{"redis-data", true},
		{"a", true},
		{"A.b_c-9", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{".", false},
		{"..", false},
		{"../../etc", false},
		{"a/b", false},
		{"-a", false},
		{"_a", false},
		{".hidden", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a b", false},
		{long, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.name), func(t *testing.T) {
			err := ValidateName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
	if err := ValidateNamespace(strings.Repeat("n", 64)); !errors.Is(err, ErrInvalid) {
		t.Errorf("64-char namespace: got %v, want ErrInvalid", err)
	}
	if err := ValidateNamespace("kube-system"); err != nil {
		t.Errorf("kube-system: %v", err)
	}
}

func TestAnonymousName(t *testing.T) {
	a := AnonymousName(Owner{PodSandboxID: "pod", Container: "c", Target: "/data"})
	b := AnonymousName(Owner{PodSandboxID: "pod", Container: "c", Target: "/data", PodName: "other"})
	c := AnonymousName(Owner{PodSandboxID: "pod", Container: "c/", Target: "data"})
	if a != b {
		t.Errorf("PodName changed the name: %s vs %s", a, b)
	}
	if a == c {
		t.Errorf("fields not separated: %s", a)
	}
	if !isAnonymousName(a) || ValidateName(a) != nil {
		t.Errorf("%q is not a 64-hex volume name", a)
	}
}

// TestNamedVolumeNotAnonymousShape checks that neither Create nor a named
// request of Acquire takes a name of an anonymous volume's shape, so a named
// volume can never be handed an anonymous volume's data.
func TestNamedVolumeNotAnonymousShape(t *testing.T) {
	s, _ := newStore(t)
	owner := Owner{PodSandboxID: "pod", Container: "app", Target: "/data"}
	anon := AnonymousName(owner)
	if _, _, err := s.Acquire("owner", []Request{{Namespace: "default", Owner: &owner}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{anon, strings.ToUpper(anon), strings.Repeat("9", 64)} {
		if _, err := s.Create("default", name, CreateOptions{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "anonymous") {
			t.Errorf("Create(%s) = %v, want ErrInvalid saying why", name, err)
		}
		if _, _, err := s.Acquire("thief", []Request{{Namespace: "default", Name: name}}, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("Acquire of named %s = %v, want ErrInvalid", name, err)
		}
	}
	if v, err := s.Get("default", anon); err != nil || !slices.Equal(v.UsedBy, []string{"owner"}) {
		t.Errorf("anonymous volume = %+v, %v; want used by its owner only", v, err)
	}
	for _, name := range []string{strings.Repeat("a", 63), strings.Repeat("g", 64), strings.Repeat("a", 65)} {
		if _, err := s.Create("default", name, CreateOptions{}); err != nil {
			t.Errorf("Create(%s) = %v", name, err)
		}
	}
}

func TestCreateGetListRemove(t *testing.T) {
	s, root := newStore(t)
	v, err := s.Create("default", "web", CreateOptions{Labels: map[string]string{"app": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	wantMP := filepath.Join(root, "volumes", "default", "web", "_data")
	if resolved, _ := filepath.EvalSymlinks(filepath.Join(root, "volumes")); resolved != "" {
		wantMP = filepath.Join(resolved, "default", "web", "_data")
	}
	if v.Mountpoint != wantMP {
		t.Errorf("Mountpoint = %q, want %q", v.Mountpoint, wantMP)
	}
	st, err := os.Stat(v.Mountpoint)
	if err != nil || st.Mode().Perm() != 0o755 || !st.IsDir() {
		t.Fatalf("_data: %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(root, "volumes", "default", "web", "volume.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create("default", "web", CreateOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	if _, err := s.Create("shop", "web", CreateOptions{}); err != nil {
		t.Fatalf("same name in another namespace: %v", err)
	}
	if _, err := s.Create("default", "db", CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	got, err := s.Get("default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["app"] != "web" || got.Anonymous || got.UsedBy == nil || got.CreatedAt.IsZero() {
		t.Errorf("Get = %+v", got)
	}
	if _, err := s.Get("default", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get missing: %v", err)
	}
	if _, err := s.Get("nons", "web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get missing namespace: %v", err)
	}

	vols, err := s.List(ListOptions{Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"default/db", "default/web"}; !slices.Equal(names(vols), want) {
		t.Errorf("List = %v, want %v", names(vols), want)
	}
	vols, err = s.List(ListOptions{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"default/db", "default/web", "shop/web"}; !slices.Equal(names(vols), want) {
		t.Errorf("List -A = %v, want %v", names(vols), want)
	}

	if err := s.Remove("default", "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "volumes", "default", "web")); !os.IsNotExist(err) {
		t.Errorf("volume dir still there: %v", err)
	}
	if err := s.Remove("default", "web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove twice: %v", err)
	}
	for _, bad := range []string{"..", "../../etc", "a/b", ""} {
		if err := s.Remove("default", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Remove(%q) = %v, want ErrInvalid", bad, err)
		}
		if _, err := s.Create("default", bad, CreateOptions{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.Create("../x", "a", CreateOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create in namespace ../x = %v, want ErrInvalid", err)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "volumes", "default"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary entry left behind: %s", e.Name())
		}
	}
}

func anon(pod, ctr, target string) Request {
	return Request{Namespace: "default", Owner: &Owner{PodSandboxID: pod, Container: ctr, Target: target}}
}

func TestAcquireRelease(t *testing.T) {
	s, _ := newStore(t)
	reqs := []Request{
		{Namespace: "default", Name: "data", CreateOptions: CreateOptions{Labels: map[string]string{"k": "v"}}},
		anon("pod1", "app", "/cache"),
		{Namespace: "default", Name: "data"}, // a repeat counts once
	}
	vols, _, err := s.Acquire("c1", reqs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || vols[0].Labels["k"] != "v" || !vols[1].Anonymous || vols[1].Name != AnonymousName(*reqs[1].Owner) {
		t.Fatalf("Acquire = %+v", vols)
	}
	again, _, err := s.Acquire("c1", reqs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(again), names(vols)) {
		t.Errorf("repeated Acquire = %v, want %v", names(again), names(vols))
	}
	if _, _, err := s.Acquire("c2", reqs[:1], nil); err != nil {
		t.Fatal(err)
	}
	v, _ := s.Get("default", "data")
	if want := []string{"c1", "c2"}; !slices.Equal(v.UsedBy, want) {
		t.Errorf("UsedBy = %v, want %v", v.UsedBy, want)
	}
	err = s.Remove("default", "data")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "c1") || !strings.Contains(err.Error(), "c2") {
		t.Errorf("Remove in-use = %v, want ErrInUse naming c1 and c2", err)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("unknown"); err != nil {
		t.Fatal(err)
	}
	v, _ = s.Get("default", "data")
	if want := []string{"c2"}; !slices.Equal(v.UsedBy, want) {
		t.Errorf("after Release UsedBy = %v, want %v", v.UsedBy, want)
	}
	if err := s.Release("c2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("default", "data"); err != nil {
		t.Errorf("Remove after Release: %v", err)
	}
}

func TestAcquireRollback(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, s *Store, root string)
		reqs  []Request
		want  error
	}{
		{
			name: "invalid second name",
			reqs: []Request{{Namespace: "default", Name: "first"}, {Namespace: "default", Name: "../x"}},
			want: ErrInvalid,
		},
		{
			name: "anonymous without owner",
			reqs: []Request{{Namespace: "default", Name: "first"}, {Namespace: "default"}},
			want: ErrInvalid,
		},
		{
			name: "second volume broken",
			setup: func(t *testing.T, s *Store, root string) {
				if err := os.MkdirAll(filepath.Join(root, "volumes", "default", "broken"), 0o700); err != nil {
					t.Fatal(err)
				}
			},
			reqs: []Request{{Namespace: "default", Name: "first"}, {Namespace: "default", Name: "broken"}},
			want: ErrNotFound,
		},
		{
			name: "anonymous name taken by a named volume",
			setup: func(t *testing.T, s *Store, root string) {
				// As a store written before such names were refused holds it.
				if _, err := s.Create("default", "legacy", CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				dir := filepath.Join(root, "volumes", "default")
				if err := os.Rename(filepath.Join(dir, "legacy"), filepath.Join(dir, AnonymousName(Owner{PodSandboxID: "p", Container: "c", Target: "/t"}))); err != nil {
					t.Fatal(err)
				}
			},
			reqs: []Request{{Namespace: "default", Name: "first"}, anon("p", "c", "/t")},
			want: ErrExists,
		},
		{
			name: "existing volume gets no stray reference",
			setup: func(t *testing.T, s *Store, root string) {
				if _, err := s.Create("default", "first", CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Join(root, "volumes", "default", "broken"), 0o700); err != nil {
					t.Fatal(err)
				}
			},
			reqs: []Request{{Namespace: "default", Name: "first"}, {Namespace: "default", Name: "broken"}},
			want: ErrNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, root := newStore(t)
			if tt.setup != nil {
				tt.setup(t, s, root)
			}
			before, _ := s.List(ListOptions{Namespace: "default"})
			if _, _, err := s.Acquire("c1", tt.reqs, nil); !errors.Is(err, tt.want) {
				t.Fatalf("Acquire = %v, want %v", err, tt.want)
			}
			after, _ := s.List(ListOptions{Namespace: "default"})
			if !slices.Equal(names(after), names(before)) {
				t.Errorf("volumes after failed Acquire = %v, want %v", names(after), names(before))
			}
			for _, v := range after {
				if len(v.UsedBy) != 0 {
					t.Errorf("%s keeps UsedBy %v", v.Name, v.UsedBy)
				}
			}
			if _, err := os.Stat(filepath.Join(root, "volumes", "default", "first")); err == nil && len(before) == 0 {
				t.Errorf("first volume left behind")
			}
		})
	}
}

func TestRemovePodVolumes(t *testing.T) {
	s, _ := newStore(t)
	if _, _, err := s.Acquire("c1", []Request{anon("pod1", "app", "/a"), {Namespace: "default", Name: "named"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("c2", []Request{anon("pod1", "app", "/b")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("c3", []Request{anon("pod2", "app", "/a")}, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c3"} {
		if err := s.Release(id); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := s.RemovePodVolumes("pod1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{AnonymousName(Owner{PodSandboxID: "pod1", Container: "app", Target: "/a"})}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v (in-use /b kept)", removed, want)
	}
	vols, _ := s.List(ListOptions{Namespace: "default"})
	if len(vols) != 3 {
		t.Errorf("left %v, want named, pod1 /b and pod2 /a", names(vols))
	}
}

func TestReconcile(t *testing.T) {
	s, _ := newStore(t)
	live := anon("live", "app", "/a")
	dead := anon("dead", "app", "/a")
	deadInUse := anon("dead", "app", "/b")
	for id, r := range map[string]Request{"c1": live, "c2": dead, "c3": deadInUse, "c4": {Namespace: "default", Name: "named"}} {
		if _, _, err := s.Acquire(id, []Request{r}, nil); err != nil {
			t.Fatal(err)
		}
	}
	key := func(r Request) string { return "default/" + AnonymousName(*r.Owner) }
	refs := map[string][]string{
		key(live):      {"c1"},
		key(deadInUse): {"c9", "c3", "c9"},
	}
	if err := reconcile(s, refs, map[string]bool{"live": true}, false); err != nil {
		t.Fatal(err)
	}
	vols, _ := s.List(ListOptions{Namespace: "default"})
	got := map[string][]string{}
	for _, v := range vols {
		got[v.Namespace+"/"+v.Name] = v.UsedBy
	}
	want := map[string][]string{
		key(live):       {"c1"},
		key(deadInUse):  {"c3", "c9"},
		"default/named": {},
	}
	if len(got) != len(want) {
		t.Fatalf("after Reconcile: %v, want %v", got, want)
	}
	for k, w := range want {
		if !slices.Equal(got[k], w) {
			t.Errorf("%s UsedBy = %v, want %v", k, got[k], w)
		}
	}
	// The index follows: releasing c9 frees the volume, c4 holds nothing.
	if err := s.Release("c9"); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("c3"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("default", AnonymousName(*deadInUse.Owner)); err != nil {
		t.Errorf("Remove after Release: %v", err)
	}
	if err := s.Remove("default", "named"); err != nil {
		t.Errorf("Remove named: %v", err)
	}
	// keepAnonymous keeps an unused anonymous volume of a gone pod.
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if err := reconcile(s, nil, nil, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("default", AnonymousName(*live.Owner)); err != nil {
		t.Errorf("keepAnonymous removed the volume: %v", err)
	}
}

// reconcile does what the plugin's Synchronize does with the store.
func reconcile(s *Store, refs map[string][]string, livePods map[string]bool, keepAnonymous bool) error {
	if err := s.SetReferences(refs); err != nil {
		return err
	}
	_, err := s.RemoveOrphans(func(pod string) bool { return livePods[pod] }, keepAnonymous)
	return err
}

func TestReopenRebuildsState(t *testing.T) {
	s, root := newStore(t)
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "v1"}, anon("p", "c", "/x")}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openStore(t, root)
	if err := s2.Remove("default", "v1"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove after reopen = %v, want ErrInUse", err)
	}
	if err := s2.Release("c1"); err != nil {
		t.Fatal(err)
	}
	vols, err := s2.List(ListOptions{Namespace: "default"})
	if err != nil || len(vols) != 2 {
		t.Fatalf("List = %v, %v", names(vols), err)
	}
	for _, v := range vols {
		if len(v.UsedBy) != 0 {
			t.Errorf("%s still used by %v: index not rebuilt", v.Name, v.UsedBy)
		}
	}
}

func TestTwoStoresSeeEachOther(t *testing.T) {
	root := t.TempDir()
	a, b := openStore(t, root), openStore(t, root)
	if err := a.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Acquire("c1", []Request{{Namespace: "default", Name: "v"}}, nil); err != nil {
		t.Fatal(err)
	}
	// a's index predates b's Acquire; the generation makes a reload it.
	if err := a.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove("default", "v"); err != nil {
		t.Errorf("Remove after Release through the other store: %v", err)
	}
}

func TestOpenRemovesLeftovers(t *testing.T) {
	s, root := newStore(t)
	if _, err := s.Create("default", "keep", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ns := filepath.Join(root, "volumes", "default")
	leftovers := []string{
		filepath.Join(ns, ".tmp-half-0123456789abcdef", "_data", "f"),
		filepath.Join(ns, ".tmp-rm-0123456789abcdef", "_data", "f"),
		filepath.Join(ns, ".tmp-json-0123456789abcdef"),
	}
	for _, p := range leftovers {
		writeFile(t, p, "x")
	}
	// A volume without metadata is reported, never deleted.
	if err := os.MkdirAll(filepath.Join(ns, "nometa", "_data"), 0o755); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, root)
	entries, _ := os.ReadDir(ns)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if want := []string{"keep", "nometa"}; !slices.Equal(got, want) {
		t.Errorf("entries after Open = %v, want %v", got, want)
	}
	vols, _ := s2.List(ListOptions{Namespace: "default"})
	if want := []string{"default/keep"}; !slices.Equal(names(vols), want) {
		t.Errorf("List = %v, want %v", names(vols), want)
	}
	// Open put the leftovers in the trash, which Check reports until
	// someone (the reaper, the CLI's rm or prune) deletes them.
	probs, err := s2.Check()
	if err != nil {
		t.Fatal(err)
	}
	trashed := 0
	for _, p := range probs {
		if strings.HasPrefix(p.Name, trashDir+"/") {
			trashed++
		}
	}
	if len(probs) != 4 || probs[0].Name != "nometa" || trashed != 3 {
		t.Errorf("Check = %+v, want a problem for nometa and one for each leftover in the trash", probs)
	}
	if err := s2.ReapTrash(); err != nil {
		t.Fatal(err)
	}
	probs, err = s2.Check()
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 1 || probs[0].Name != "nometa" {
		t.Errorf("Check after ReapTrash = %+v, want one problem for nometa", probs)
	}
}

func TestCopyUpOnce(t *testing.T) {
	root := t.TempDir()
	stores := []*Store{openStore(t, root), openStore(t, root)}
	if _, err := stores[0].Create("default", "v", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var copies atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(s *Store) {
			defer wg.Done()
			errs <- s.CopyUps().Copy("default", "v", func(dir string) error {
				copies.Add(1)
				for j := 0; j < 20; j++ {
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(j)), []byte("data"), 0o644); err != nil {
						return err
					}
				}
				return nil
			})
		}(stores[i%2])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := copies.Load(); n != 1 {
		t.Errorf("copied %d times, want 1", n)
	}
	// A finished copy-up is not redone even when the data was deleted since.
	v, _ := stores[0].Get("default", "v")
	entries, _ := os.ReadDir(v.Mountpoint)
	for _, e := range entries {
		os.Remove(filepath.Join(v.Mountpoint, e.Name()))
	}
	if err := stores[1].CopyUps().Copy("default", "v", func(string) error { copies.Add(1); return nil }); err != nil || copies.Load() != 1 {
		t.Errorf("copy-up redone: %v, copies=%d", err, copies.Load())
	}
}

func TestCopyUpSkipsVolumeWithData(t *testing.T) {
	s, _ := newStore(t)
	v, _ := s.Create("default", "v", CreateOptions{})
	writeFile(t, filepath.Join(v.Mountpoint, "mine"), "x")
	called := false
	if err := s.CopyUps().Copy("default", "v", func(string) error { called = true; return nil }); err != nil || called {
		t.Errorf("CopyUp into a volume with data: err=%v called=%v", err, called)
	}
}

func TestCopyUpFailureEmptiesData(t *testing.T) {
	s, _ := newStore(t)
	v, err := s.Create("default", "v", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = s.CopyUps().Copy("default", "v", func(dir string) error {
		writeFile(t, filepath.Join(dir, "a", "b", "half"), "x")
		os.Symlink("/etc", filepath.Join(dir, "link"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("CopyUp = %v, want boom", err)
	}
	entries, _ := os.ReadDir(v.Mountpoint)
	if len(entries) != 0 {
		t.Errorf("_data not emptied: %v", entries)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("emptying followed a symlink: %v", err)
	}
	// A later call copies again.
	called := false
	if err := s.CopyUps().Copy("default", "v", func(string) error { called = true; return nil }); err != nil || !called {
		t.Errorf("retry: err=%v called=%v", err, called)
	}
}

// TestCopyUpRedoesInterruptedCopy: a copy cut short while filling the
// staging directory is thrown away and redone; one cut short while moving
// the staged entries into _data is finished without copying again.
func TestCopyUpRedoesInterruptedCopy(t *testing.T) {
	for _, tc := range []struct {
		marker     string
		wantCopied bool
		want       []string
	}{
		{copyUpStarted, true, []string{"full"}},
		{copyUpSwitching, false, []string{"moved", "staged"}},
	} {
		t.Run(tc.marker, func(t *testing.T) {
			s, root := newStore(t)
			v, _ := s.Create("default", "v", CreateOptions{})
			volDir := filepath.Join(root, "volumes", "default", "v")
			writeFile(t, filepath.Join(volDir, copyUpStaging, "staged"), "x")
			writeFile(t, filepath.Join(v.Mountpoint, "moved"), "x")
			writeFile(t, filepath.Join(volDir, tc.marker), "")
			if err := os.Chmod(filepath.Join(volDir, copyUpStaging), 0o750); err != nil {
				t.Fatal(err)
			}
			copied := false
			err := s.CopyUps().Copy("default", "v", func(dir string) error {
				copied = true
				if names := dataNames(t, dir); len(names) != 0 {
					return fmt.Errorf("staging not emptied: %v", names)
				}
				writeFile(t, filepath.Join(dir, "full"), "x")
				return os.Chmod(dir, 0o711)
			})
			if err != nil || copied != tc.wantCopied {
				t.Fatalf("CopyUp: %v, copied %v, want %v", err, copied, tc.wantCopied)
			}
			if tc.marker == copyUpStarted {
				tc.want = append([]string{"moved"}, tc.want...) // not the copy's: kept
			}
			slices.Sort(tc.want)
			if got := dataNames(t, v.Mountpoint); !slices.Equal(got, tc.want) {
				t.Errorf("_data holds %v, want %v", got, tc.want)
			}
			if got := dataNames(t, volDir); !slices.Equal(got, []string{"_data", copyUpDone, "volume.json"}) {
				t.Errorf("volume directory holds %v", got)
			}
			st, _ := os.Stat(v.Mountpoint)
			wantMode := os.FileMode(0o711)
			if !tc.wantCopied {
				wantMode = 0o750
			}
			if st.Mode().Perm() != wantMode {
				t.Errorf("_data mode %v, want the staging directory's %v", st.Mode().Perm(), wantMode)
			}
			if need, err := needsCopyUp(s.CopyUps().Status("default", "v")); need || err != nil {
				t.Errorf("NeedsCopyUp after completion = %v, %v", need, err)
			}
		})
	}
}

// TestCopyUpNothingToCopyKeepsData: a copy that finds nothing to copy leaves
// _data's owner, mode and times as they were.
func TestCopyUpNothingToCopyKeepsData(t *testing.T) {
	s, _ := newStore(t)
	v, _ := s.Create("default", "v", CreateOptions{})
	old := time.Unix(1_000_000, 0)
	os.Chtimes(v.Mountpoint, old, old)
	before, _ := os.Stat(v.Mountpoint)
	if err := s.CopyUps().Copy("default", "v", func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(v.Mountpoint)
	if before.Mode() != after.Mode() || !after.ModTime().Equal(old) {
		t.Errorf("_data changed from %v %v to %v %v", before.Mode(), before.ModTime(), after.Mode(), after.ModTime())
	}
}

func TestNeedsCopyUp(t *testing.T) {
	s, root := newStore(t)
	v, _ := s.Create("default", "v", CreateOptions{})
	volDir := filepath.Join(root, "volumes", "default", "v")
	check := func(when string, want bool) {
		t.Helper()
		if got, err := needsCopyUp(s.CopyUps().Status("default", "v")); got != want || err != nil {
			t.Errorf("%s: NeedsCopyUp = %v, %v; want %v", when, got, err, want)
		}
	}
	check("empty", true)
	writeFile(t, filepath.Join(v.Mountpoint, "f"), "x")
	check("with data", false)
	writeFile(t, filepath.Join(volDir, copyUpStarted), "")
	check("copy-up cut short", true)
	os.Rename(filepath.Join(volDir, copyUpStarted), filepath.Join(volDir, copyUpSwitching))
	check("switch cut short", true)
	os.Rename(filepath.Join(volDir, copyUpSwitching), filepath.Join(volDir, copyUpDone))
	os.Remove(filepath.Join(v.Mountpoint, "f"))
	check("done, emptied since", false)
	if _, err := needsCopyUp(s.CopyUps().Status("default", "missing")); !errors.Is(err, ErrNotFound) {
		t.Errorf("NeedsCopyUp of a missing volume: %v", err)
	}
}

func TestSymlinksInStoreNeverFollowed(t *testing.T) {
	tests := []struct {
		name  string
		plant func(t *testing.T, volDir, outside string)
	}{
		{"_data is a symlink", func(t *testing.T, volDir, outside string) {
			os.RemoveAll(filepath.Join(volDir, "_data"))
			if err := os.Symlink(outside, filepath.Join(volDir, "_data")); err != nil {
				t.Fatal(err)
			}
		}},
		{"volume dir is a symlink", func(t *testing.T, volDir, outside string) {
			os.RemoveAll(volDir)
			if err := os.Symlink(outside, volDir); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink inside _data", func(t *testing.T, volDir, outside string) {
			if err := os.Symlink(outside, filepath.Join(volDir, "_data", "escape")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, root := newStore(t)
			outside := t.TempDir()
			writeFile(t, filepath.Join(outside, "precious"), "keep me")
			if _, err := s.Create("default", "v", CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			volDir := filepath.Join(root, "volumes", "default", "v")
			tt.plant(t, volDir, outside)
			if _, err := s.Size(&Volume{Namespace: "default", Name: "v"}); err == nil && tt.name != "symlink inside _data" {
				t.Errorf("Size followed the planted symlink")
			}
			if err := s.Remove("default", "v"); err != nil {
				t.Logf("Remove: %v", err)
			}
			if _, err := os.Stat(filepath.Join(outside, "precious")); err != nil {
				t.Fatalf("file outside the store deleted: %v", err)
			}
			if _, err := os.Lstat(volDir); !os.IsNotExist(err) {
				t.Errorf("planted entry not removed: %v", err)
			}
		})
	}
}

func TestRemoveRefusesMountInside(t *testing.T) {
	s, _ := newStore(t)
	v, err := s.Create("default", "v", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(v.Mountpoint, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	writeFile(t, filepath.Join(mnt, "f"), "on tmpfs")
	err = s.Remove("default", "v")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "mounted") {
		t.Fatalf("Remove with a mount inside = %v, want ErrInUse", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "f")); err != nil {
		t.Fatalf("file on the mount deleted: %v", err)
	}
	if _, _, err := s.Prune(PruneOptions{Namespace: "default", All: true}); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if _, err := s.Get("default", "v"); err != nil {
		t.Fatalf("Prune removed a volume with a mount inside: %v", err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("default", "v"); err != nil {
		t.Fatalf("Remove after unmount: %v", err)
	}
}

func TestConcurrentCreate(t *testing.T) {
	root := t.TempDir()
	stores := []*Store{openStore(t, root), openStore(t, root)}
	var wg sync.WaitGroup
	var wins, exists atomic.Int32
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(s *Store) {
			defer wg.Done()
			_, err := s.Create("default", "same", CreateOptions{})
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrExists):
				exists.Add(1)
			default:
				t.Error(err)
			}
		}(stores[i%2])
	}
	wg.Wait()
	if wins.Load() != 1 || exists.Load() != 9 {
		t.Errorf("wins=%d exists=%d, want 1 and 9", wins.Load(), exists.Load())
	}
	for _, s := range stores {
		vols, err := s.List(ListOptions{Namespace: "default"})
		if err != nil || len(vols) != 1 {
			t.Errorf("List = %v, %v, want one volume", names(vols), err)
		}
	}
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name string
		opts PruneOptions
		want []string
	}{
		{"anonymous only", PruneOptions{}, []string{"anon-free"}},
		{"all", PruneOptions{All: true}, []string{"anon-free", "named-free", "labelled"}},
		{"filter", PruneOptions{All: true, Filter: func(v *Volume) bool { return v.Labels["keep"] == "" }}, []string{"anon-free", "named-free"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			free := anon("p", "c", "/free")
			if _, _, err := s.Acquire("c1", []Request{anon("p", "c", "/busy"), {Namespace: "default", Name: "named-busy"}}, nil); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Acquire("c2", []Request{free}, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.Release("c2"); err != nil {
				t.Fatal(err)
			}
			s.Create("default", "named-free", CreateOptions{})
			s.Create("default", "labelled", CreateOptions{Labels: map[string]string{"keep": "yes"}})
			v, _ := s.Get("default", AnonymousName(*free.Owner))
			writeFile(t, filepath.Join(v.Mountpoint, "f"), strings.Repeat("x", 10000))

			tt.opts.Namespace = "default"
			removed, reclaimed, err := s.Prune(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			alias := map[string]string{AnonymousName(*free.Owner): "anon-free"}
			var got []string
			for _, v := range removed {
				n := v.Name
				if a, ok := alias[n]; ok {
					n = a
				}
				got = append(got, n)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) {
				t.Errorf("pruned %v, want %v", got, want)
			}
			if reclaimed < 10000 {
				t.Errorf("reclaimed %d, want at least 10000", reclaimed)
			}
			left, _ := s.List(ListOptions{Namespace: "default"})
			if len(left)+len(removed) != 5 {
				t.Errorf("left %v", names(left))
			}
		})
	}
	s, _ := newStore(t)
	if _, _, err := s.Prune(PruneOptions{Namespace: "a/b"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Prune in bad namespace = %v", err)
	}
}

func TestSize(t *testing.T) {
	s, _ := newStore(t)
	v, _ := s.Create("default", "v", CreateOptions{})
	big := filepath.Join(v.Mountpoint, "d", "big")
	writeFile(t, big, strings.Repeat("x", 64*1024))
	if err := os.Link(big, filepath.Join(v.Mountpoint, "hard")); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "huge"), strings.Repeat("y", 1<<20))
	if err := os.Symlink(outside, filepath.Join(v.Mountpoint, "link")); err != nil {
		t.Fatal(err)
	}
	size, err := s.Size(v)
	if err != nil {
		t.Fatal(err)
	}
	if size < 64*1024 || size >= 2*64*1024+64*1024 {
		t.Errorf("Size = %d: want the 64KiB file once, nothing behind the symlink", size)
	}
	vols, err := s.List(ListOptions{Namespace: "default", Size: true})
	if err != nil || len(vols) != 1 || vols[0].Size == nil || *vols[0].Size != size {
		t.Errorf("List with Size = %+v, %v", vols, err)
	}
}

func TestParseFilters(t *testing.T) {
	vols := []*Volume{
		{Name: "web", Labels: map[string]string{"app": "web", "tier": "front"}, UsedBy: []string{"c1"}},
		{Name: "web-old", Labels: map[string]string{"app": "web"}},
		{Name: "db", Labels: map[string]string{}},
		{Name: strings.Repeat("a", 64), Anonymous: true},
	}
	tests := []struct {
		specs []string
		want  []string
	}{
		{nil, []string{"web", "web-old", "db", strings.Repeat("a", 64)}},
		{[]string{"name=web"}, []string{"web"}},
		{[]string{"name=web*"}, []string{"web", "web-old"}},
		{[]string{"name=web", "name=db"}, []string{"web", "db"}},
		{[]string{"label=app"}, []string{"web", "web-old"}},
		{[]string{"label=app=web", "label=tier=front"}, []string{"web"}},
		{[]string{"dangling=true"}, []string{"web-old", "db", strings.Repeat("a", 64)}},
		{[]string{"dangling=false"}, []string{"web"}},
		{[]string{"anonymous=true"}, []string{strings.Repeat("a", 64)}},
		{[]string{"anonymous=false", "dangling=true"}, []string{"web-old", "db"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.specs, ","), func(t *testing.T) {
			f, err := ParseFilters(tt.specs)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range vols {
				if f(v) {
					got = append(got, v.Name)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"color=red", "dangling=maybe", "name", "name=[", "label="} {
		if _, err := ParseFilters([]string{bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseFilters(%q) = %v, want ErrInvalid", bad, err)
		} else if bad == "color=red" && !strings.Contains(err.Error(), "color") {
			t.Errorf("error does not name the key: %v", err)
		}
	}
}

func TestConcurrentAcquireRelease(t *testing.T) {
	root := t.TempDir()
	stores := []*Store{openStore(t, root), openStore(t, root)}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(s *Store, id string) {
			defer wg.Done()
			reqs := []Request{{Namespace: "default", Name: "shared"}, anon("pod", id, "/x")}
			for j := 0; j < 5; j++ {
				if _, _, err := s.Acquire(id, reqs, nil); err != nil {
					t.Error(err)
					return
				}
				if err := s.Release(id); err != nil {
					t.Error(err)
					return
				}
			}
		}(stores[i%2], fmt.Sprintf("ctr%d", i))
	}
	wg.Wait()
	v, err := stores[0].Get("default", "shared")
	if err != nil || len(v.UsedBy) != 0 {
		t.Fatalf("shared after all releases: %+v, %v", v, err)
	}
	removed, err := stores[1].RemovePodVolumes("pod")
	if err != nil || len(removed) != 16 {
		t.Errorf("RemovePodVolumes removed %d, %v; want 16", len(removed), err)
	}
}

// TestWithoutOpenat2 runs the path-safety tests on the component walk that
// replaces openat2 on kernels without it.
func TestWithoutOpenat2(t *testing.T) {
	defer fsx.ForceFallback()()
	t.Run("symlinks", TestSymlinksInStoreNeverFollowed)
	t.Run("lifecycle", TestCreateGetListRemove)
	t.Run("copy-up", TestCopyUpOnce)
	t.Run("lists", TestPlantedSymlinksInLists)
	t.Run("open path beneath", TestOpenPathBeneath)
	t.Run("subpaths", TestAcquire)
}

// TestListFilter lists only what the filter accepts, measured with Size.
func TestListFilter(t *testing.T) {
	s, _ := newStore(t)
	for _, name := range []string{"cache", "db", "web"} {
		if _, err := s.Create("default", name, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	vols, err := s.List(ListOptions{Namespace: "default", Size: true, Filter: func(v *Volume) bool { return v.Name != "db" }})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(vols), " "); got != "default/cache default/web" {
		t.Errorf("List with a filter: %q, want default/cache default/web", got)
	}
	for _, v := range vols {
		if v.Size == nil {
			t.Errorf("%s: not measured", v.Name)
		}
	}
}
