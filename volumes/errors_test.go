package volumes

import (
	"errors"
	"slices"
	"testing"
)

// TestOpErrors checks that the errors of operations on one volume name it
// the same way, keep their class for errors.Is and carry the containers that
// hold it, for callers that decide or print with them.
func TestOpErrors(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.Create("shop", "data", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("c2", []Request{{Namespace: "shop", Name: "data"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("c1", []Request{{Namespace: "shop", Name: "data"}}, nil); err != nil {
		t.Fatal(err)
	}
	_, createErr := s.Create("shop", "data", CreateOptions{})
	_, getErr := s.Get("shop", "nope")
	_, growErr := s.Grow("shop", "data", 1<<20)
	for _, tc := range []struct {
		what  string
		err   error
		class error
		text  string
		refs  []string
	}{
		{"remove in use", s.Remove("shop", "data"), ErrInUse, `volume "data" in namespace "shop": in use by container(s) c1, c2`, []string{"c1", "c2"}},
		{"create again", createErr, ErrExists, `volume "data" in namespace "shop": already exists`, nil},
		{"get missing", getErr, ErrNotFound, `volume "nope" in namespace "shop": not found`, nil},
		{"grow unsized", growErr, ErrInvalid, `volume "data" in namespace "shop": invalid: it has no size; only a volume created with a size can grow`, nil},
	} {
		t.Run(tc.what, func(t *testing.T) {
			if !errors.Is(tc.err, tc.class) || tc.err.Error() != tc.text {
				t.Fatalf("error %q (%v), want %q wrapping %v", tc.err, tc.err, tc.text, tc.class)
			}
			var op *OpError
			if !errors.As(tc.err, &op) || op.Namespace != "shop" || !slices.Equal(op.Refs, tc.refs) {
				t.Fatalf("OpError %+v, want namespace shop and refs %v", op, tc.refs)
			}
		})
	}
}
