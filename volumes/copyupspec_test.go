package volumes

import (
	"errors"
	"strings"
	"testing"
)

// TestCopyUpSpec checks that what the plugin writes for the hook reads back
// the same, targets with "=" and "/" included, and that a malformed
// argument is refused with a message that names it and the expected form.
func TestCopyUpSpec(t *testing.T) {
	for _, spec := range []CopyUpSpec{
		{VolumeRef{"default", "data"}, "/data"},
		{VolumeRef{"shop", "anon-3f2a9c"}, "/var/lib/a=b/c d"},
		{VolumeRef{"kube-system", "x.y_z"}, "/"},
	} {
		got, err := ParseCopyUpSpec(spec.String())
		if err != nil || got != spec {
			t.Errorf("ParseCopyUpSpec(%q) = %+v, %v; want %+v", spec.String(), got, err, spec)
		}
		ref, err := ParseVolumeRef(spec.VolumeRef.String())
		if err != nil || ref != spec.VolumeRef {
			t.Errorf("ParseVolumeRef(%q) = %+v, %v", spec.VolumeRef.String(), ref, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"default/data", "want NAMESPACE/NAME=/target"},
		{"data=/data", "want NAMESPACE/NAME=/target"},
		{"default/../x=/data", "volume name"},
		{".ns/data=/data", `namespace ".ns"`},
		{"default/data=data", `target "data" is not an absolute path`},
		{"default/data=/a\x00b", "is not an absolute path"},
	} {
		_, err := ParseCopyUpSpec(tc.in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), strings.ReplaceAll(tc.in, "\x00", `\x00`)) {
			t.Errorf("ParseCopyUpSpec(%q) = %v, want ErrInvalid saying %q", tc.in, err, tc.want)
		}
	}
	if _, err := ParseVolumeRef("data"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "want NAMESPACE/NAME") {
		t.Errorf("ParseVolumeRef(data) = %v", err)
	}
}
