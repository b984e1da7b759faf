package volumes

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

const (
	maxNameLen      = 128
	maxNamespaceLen = 63
)

// ValidateName reports whether name is a valid volume name: it matches
// ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ and has at most 128 characters, so it can never
// be "." or "..", nor carry a "/", a NUL or a newline. The error wraps ErrInvalid
// and says why.
func ValidateName(name string) error {
	if reason := checkName(name, maxNameLen); reason != "" {
		return fmt.Errorf("volume name %q: %w: %s", name, ErrInvalid, reason)
	}
	return nil
}

// ValidateNamedVolume reports whether name may name a named volume: it must
// pass ValidateName and must not have the shape of an anonymous volume's name
// (64 hexadecimal digits, in either case), or a named volume could take the
// name, and so the data, of an anonymous one. The error wraps ErrInvalid.
func ValidateNamedVolume(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if hasAnonymousShape(name) {
		return fmt.Errorf("volume name %q: %w: 64 hexadecimal characters is the shape of anonymous volume names; choose another name for a named volume", name, ErrInvalid)
	}
	return nil
}

// hasAnonymousShape reports whether name is 64 hexadecimal digits of either
// case. AnonymousName makes lowercase ones; an uppercase one is refused too,
// so no name can be mistaken for an anonymous volume's by a person or by a
// case-insensitive file system.
func hasAnonymousShape(name string) bool {
	return isAnonymousName(strings.ToLower(name))
}

// ValidateNamespace reports whether ns is a valid namespace: the charset of
// ValidateName and at most 63 characters, the limit of Kubernetes namespaces.
// The error wraps ErrInvalid and says why.
func ValidateNamespace(ns string) error {
	if reason := checkName(ns, maxNamespaceLen); reason != "" {
		return fmt.Errorf("namespace %q: %w: %s", ns, ErrInvalid, reason)
	}
	return nil
}

// checkName returns why s is not a valid name, or "" when it is.
func checkName(s string, maxLen int) string {
	if s == "" {
		return "must not be empty"
	}
	if len(s) > maxLen {
		return fmt.Sprintf("longer than %d characters", maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		switch {
		case alnum:
		case i == 0:
			return "must start with a letter or a digit"
		case c == '_' || c == '.' || c == '-':
		default:
			return fmt.Sprintf("character %q not allowed (only [a-zA-Z0-9_.-])", c)
		}
	}
	return ""
}

// AnonymousName returns the name of the anonymous volume of one pod sandbox,
// container name and target: the hex SHA-256 of the three joined with NUL, so
// a container that restarts in the same pod finds its volume again.
func AnonymousName(o Owner) string {
	sum := sha256.Sum256([]byte(o.PodSandboxID + "\x00" + o.Container + "\x00" + o.Target))
	return hex.EncodeToString(sum[:])
}

// isAnonymousName reports whether name has the form AnonymousName gives:
// 64 lowercase hex digits. It spares reading the metadata of named volumes.
func isAnonymousName(name string) bool {
	if len(name) != 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// maxIDLen bounds a container or pod sandbox ID, as containerd's are.
const maxIDLen = 128

// validateID checks a container or pod sandbox ID, which names a list file:
// ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$ (containerd's IDs are 64 hex digits).
func validateID(what, id string) error {
	if reason := checkName(id, maxIDLen); reason != "" {
		return fmt.Errorf("%s %q: %w: %s", what, id, ErrInvalid, reason)
	}
	return nil
}
