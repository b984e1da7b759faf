package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzStorePaths feeds arbitrary namespaces and names through Create, Get
// and Remove on a fresh store and checks that the store accepts exactly the
// valid ones, refuses the others with ErrInvalid, and never makes anything
// outside ROOT/volumes/NAMESPACE/NAME.
func FuzzStorePaths(f *testing.F) {
	for _, seed := range [][2]string{
		{"default", "redis-data"}, {"default", "../../etc"}, {"../x", "v"}, {"default", "a/b"},
		{"default", "."}, {"default", ".."}, {"default", ""}, {"", "v"},
		{"default", strings.Repeat("a", 128)}, {"default", strings.Repeat("a", 300)},
		{"default", "a\x00b"}, {"default", "a\nb"}, {"default", ".tmp-x"}, {"default", "-rf"},
		{"default", "v/../../../x"}, {"ns", "/etc/passwd"}, {"a.b", "_"}, {"default", "A_b.c-9"},
		{"default", "é"}, {"default", "a\u2215b"}, {strings.Repeat("n", 63), "v"}, {"volumes", "..."},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, ns, name string) {
		parent := t.TempDir()
		root := filepath.Join(parent, "store")
		s, err := Open(root)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		valid := ValidateNamespace(ns) == nil && ValidateName(name) == nil

		v, err := s.Create(ns, name, CreateOptions{})
		switch {
		case valid && err != nil:
			t.Fatalf("Create(%q, %q) of a valid name: %v", ns, name, err)
		case !valid && !errors.Is(err, ErrInvalid):
			t.Fatalf("Create(%q, %q) = %v, want ErrInvalid", ns, name, err)
		}
		if valid {
			want := filepath.Join(s.dir, ns, name, dataDir)
			if v.Mountpoint != want {
				t.Fatalf("Mountpoint = %q, want %q", v.Mountpoint, want)
			}
			if st, err := os.Lstat(want); err != nil || !st.IsDir() {
				t.Fatalf("Create(%q, %q) made no %s: %v", ns, name, want, err)
			}
			checkOnly(t, parent, []string{"store"})
			checkOnly(t, filepath.Join(root, volumesDir), []string{lockFile, refsDir, podsDir, trashDir, ledgerFile, ns})
			checkOnly(t, filepath.Join(root, volumesDir, ns), []string{name})
		}

		if got, err := s.Get(ns, name); valid && (err != nil || got.Name != name || got.Namespace != ns) {
			t.Fatalf("Get(%q, %q) = %+v, %v", ns, name, got, err)
		} else if !valid && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Get(%q, %q) = %v, want ErrInvalid", ns, name, err)
		}
		if err := s.Remove(ns, name); valid && err != nil {
			t.Fatalf("Remove(%q, %q): %v", ns, name, err)
		} else if !valid && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Remove(%q, %q) = %v, want ErrInvalid", ns, name, err)
		}

		checkOnly(t, parent, []string{"store"})
		checkOnly(t, root, []string{volumesDir})
		checkOnly(t, filepath.Join(root, volumesDir, trashDir), nil)
		want := []string{lockFile, refsDir, podsDir, trashDir, ledgerFile}
		if valid {
			want = append(want, ns)
			checkOnly(t, filepath.Join(root, volumesDir, ns), nil)
		}
		checkOnly(t, filepath.Join(root, volumesDir), want)
	})
}

// checkOnly fails unless dir holds exactly the entries want.
func checkOnly(t *testing.T, dir string, want []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", dir, got, want)
	}
}
