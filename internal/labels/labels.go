// Package labels holds the one rule for a volume's labels that come from
// untrusted input: a pod's annotations and a pulled artifact's config. It is
// a leaf, so the parser of annotations and the artifact reader share it
// without either depending on the store.
package labels

import (
	"fmt"
	"strings"
)

// Bounds on one set of labels, so hostile input cannot make a volume.json
// (and every listing of it) large.
const (
	// Max is the most labels a volume takes.
	Max = 64
	// MaxBytes is the most bytes of one label, key and value together.
	MaxBytes = 4096
)

// Validate refuses more than Max labels, an empty key, a label over
// MaxBytes, a key with a NUL, a newline or '=' (which KEY=VALUE printing and
// parsing could not tell apart), and a value with a NUL.
func Validate(labels map[string]string) error {
	if len(labels) > Max {
		return fmt.Errorf("%d labels, more than the %d allowed", len(labels), Max)
	}
	for k, v := range labels {
		if k == "" || len(k)+len(v) > MaxBytes || strings.ContainsAny(k, "\x00\n=") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("label %q is invalid", k)
		}
	}
	return nil
}
