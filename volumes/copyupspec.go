package volumes

import (
	"fmt"
	"path/filepath"
	"strings"
)

// VolumeRef names one volume as NAMESPACE/NAME: the form the plugin hands
// the copy-up hook for --keep-owner and --chown.
type VolumeRef struct {
	Namespace, Name string
}

// String is NAMESPACE/NAME, which ParseVolumeRef reads back.
func (r VolumeRef) String() string { return r.Namespace + "/" + r.Name }

// ParseVolumeRef reads NAMESPACE/NAME, validating both.
func ParseVolumeRef(s string) (VolumeRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		return VolumeRef{}, fmt.Errorf("%q: %w: want NAMESPACE/NAME", s, ErrInvalid)
	}
	return validRef(s, ns, name)
}

func validRef(s, ns, name string) (VolumeRef, error) {
	if err := ValidateNamespace(ns); err != nil {
		return VolumeRef{}, fmt.Errorf("%q: %w", s, err)
	}
	if err := ValidateName(name); err != nil {
		return VolumeRef{}, fmt.Errorf("%q: %w", s, err)
	}
	return VolumeRef{Namespace: ns, Name: name}, nil
}

// CopyUpSpec is one copy-up the plugin asks of the copy-up hook: the volume
// to fill and the target, in the container, whose image content fills it.
// Its text form, NAMESPACE/NAME=/target, is the hook's --volume argument:
// the plugin writes it with String and the hook reads it with
// ParseCopyUpSpec, so the two never disagree on the syntax.
type CopyUpSpec struct {
	VolumeRef
	// Target is absolute. It is resolved inside the container's root file
	// system as the runtime resolves the mount's destination, symlinks
	// first, so it is checked but never cleaned.
	Target string
}

// String is NAMESPACE/NAME=/target, which ParseCopyUpSpec reads back.
func (c CopyUpSpec) String() string { return c.VolumeRef.String() + "=" + c.Target }

// ParseCopyUpSpec reads NAMESPACE/NAME=/target. Names never hold "/" or "=",
// so the first of each separates the parts and the target may hold any.
func ParseCopyUpSpec(s string) (CopyUpSpec, error) {
	ref, target, ok := strings.Cut(s, "=")
	ns, name, ok2 := strings.Cut(ref, "/")
	if !ok || !ok2 {
		return CopyUpSpec{}, fmt.Errorf("%q: %w: want NAMESPACE/NAME=/target", s, ErrInvalid)
	}
	r, err := validRef(s, ns, name)
	if err != nil {
		return CopyUpSpec{}, err
	}
	if !filepath.IsAbs(target) || strings.ContainsRune(target, 0) {
		return CopyUpSpec{}, fmt.Errorf("%q: %w: target %q is not an absolute path", s, ErrInvalid, target)
	}
	return CopyUpSpec{VolumeRef: r, Target: target}, nil
}
