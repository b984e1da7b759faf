package volumes

import (
	"reflect"
	"testing"
)

// TestNamespaceCountsFollowTheStore checks that the counts a scrape reads
// from memory stay what a fresh scan of the store finds, through this
// Store's creations, acquisitions, removals and prunes, and through a
// change another process makes.
func TestNamespaceCountsFollowTheStore(t *testing.T) {
	s, root := newStore(t)
	other := openStore(t, root)
	check := func(step string) {
		t.Helper()
		got, err := s.Stats().Namespaces()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		want, err := openStore(t, root).Stats().Namespaces()
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: counts %+v, a fresh scan finds %+v", step, got, want)
		}
	}
	check("empty")
	for _, name := range []string{"a", "b"} {
		if _, err := s.Create("shop", name, CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	check("created a and b")
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "shop", Name: "c"}, anon("pod1", "app", "/x")}, nil); err != nil {
		t.Fatal(err)
	}
	check("acquired c and an anonymous volume")
	if _, err := other.Create("web", "x", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("another process created web/x")
	if err := s.Remove("shop", "a"); err != nil {
		t.Fatal(err)
	}
	check("removed a")
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemovePodVolumes("pod1"); err != nil {
		t.Fatal(err)
	}
	check("removed pod1's volumes")
	if _, _, err := s.Prune(PruneOptions{Namespace: "shop", All: true}); err != nil {
		t.Fatal(err)
	}
	check("pruned shop")
	got, err := s.Stats().Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["web"].Named != 1 {
		t.Errorf("counts at the end: %+v, want web with one named volume", got)
	}
}
