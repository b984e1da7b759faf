package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// PullRule lets the pods of some namespaces seed volumes from some
// references. Both lists hold shell patterns (path.Match): "*" matches any
// run of characters but "/", so "registry.local:5000/shop/*" admits
// "registry.local:5000/shop/pg:16" and not "registry.local:5000/shop/a/b:1".
type PullRule struct {
	// Namespaces are patterns of Kubernetes namespaces ("shop", "ci-*").
	Namespaces []string `json:"namespaces"`
	// Refs are patterns of references, matched against the reference in
	// full form (HOST/REPOSITORY:TAG or HOST/REPOSITORY@DIGEST). The host
	// is literal: a pattern never admits a registry it does not name.
	Refs []string `json:"refs"`
}

// UnmarshalJSON is strict: a key other than namespaces and refs is an
// error naming it.
func (r *PullRule) UnmarshalJSON(b []byte) error {
	type plain PullRule
	var v plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("%s: want a mapping with the keys namespaces and refs", strings.TrimPrefix(err.Error(), "json: "))
	}
	*r = PullRule(v)
	return nil
}

func validateRules(rules []PullRule) error {
	for i, r := range rules {
		key := fmt.Sprintf("registries.allow[%d]", i)
		if len(r.Namespaces) == 0 || len(r.Refs) == 0 {
			return fmt.Errorf("%w: %s: give both namespaces and refs", ErrInvalid, key)
		}
		for j, ns := range r.Namespaces {
			if _, err := path.Match(ns, ""); err != nil || ns == "" || strings.Contains(ns, "/") {
				return fmt.Errorf("%w: %s.namespaces[%d]: %q is not a namespace pattern", ErrInvalid, key, j, ns)
			}
		}
		for j, ref := range r.Refs {
			host, repo, ok := strings.Cut(ref, "/")
			if _, err := path.Match(ref, ""); err != nil || !ok || host == "" || repo == "" || strings.ContainsAny(host, "*?[\\") {
				return fmt.Errorf("%w: %s.refs[%d]: %q: want HOST/REPOSITORY with patterns after the host (\"registry.local:5000/shop/*\")",
					ErrInvalid, key, j, ref)
			}
		}
	}
	return nil
}

// AllowsPull reports whether a pod of namespace ns may seed a volume from
// ref, a reference in full form (HOST/REPOSITORY:TAG or @DIGEST).
func (r *Registries) AllowsPull(ns, ref string) bool {
	for _, rule := range r.Allow {
		if !matchAny(rule.Namespaces, ns) {
			continue
		}
		if matchAny(rule.Refs, ref) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}
