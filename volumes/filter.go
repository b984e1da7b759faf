package volumes

import (
	"fmt"
	"path"
	"strings"
)

// ParseFilters turns filter specs of the form KEY=VALUE, as `volume ls` and
// `volume prune` take them, into a predicate:
//
//   - name=PATTERN: the name equals PATTERN, or matches it as a glob
//     (path.Match: *, ?, [...]). Exact-or-glob rather than Docker's substring
//     match, so that prune --filter name=db never removes "db-old" by surprise.
//   - label=KEY or label=KEY=VALUE: the volume has the label (with that value).
//   - dangling=true|false: the volume is (not) used by any container.
//   - anonymous=true|false: the volume is (not) anonymous.
//
// Several values of one key match if any does, except label, where all must;
// different keys must all match. An unknown key or a bad value is an error
// wrapping ErrInvalid. With no specs the predicate accepts every volume.
func ParseFilters(specs []string) (func(*Volume) bool, error) {
	var names []string
	var labels [][2]string // key, value; value "\x00" for "any value"
	var dangling, anonymous []bool
	for _, spec := range specs {
		key, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("filter %q: %w: want KEY=VALUE", spec, ErrInvalid)
		}
		switch key {
		case "name":
			if _, err := path.Match(value, ""); err != nil || value == "" {
				return nil, fmt.Errorf("filter %q: %w: bad name pattern", spec, ErrInvalid)
			}
			names = append(names, value)
		case "label":
			k, v, hasValue := strings.Cut(value, "=")
			if k == "" {
				return nil, fmt.Errorf("filter %q: %w: empty label key", spec, ErrInvalid)
			}
			if !hasValue {
				v = "\x00"
			}
			labels = append(labels, [2]string{k, v})
		case "dangling", "anonymous":
			b, err := parseBool(value)
			if err != nil {
				return nil, fmt.Errorf("filter %q: %w: want true or false", spec, ErrInvalid)
			}
			if key == "dangling" {
				dangling = append(dangling, b)
			} else {
				anonymous = append(anonymous, b)
			}
		default:
			return nil, fmt.Errorf("filter %q: %w: unknown filter key %q (want name, label, dangling or anonymous)", spec, ErrInvalid, key)
		}
	}
	return func(v *Volume) bool {
		if len(names) > 0 && !anyMatch(names, v.Name) {
			return false
		}
		for _, l := range labels {
			got, ok := v.Labels[l[0]]
			if !ok || l[1] != "\x00" && got != l[1] {
				return false
			}
		}
		if len(dangling) > 0 && !anyBool(dangling, len(v.UsedBy) == 0) {
			return false
		}
		if len(anonymous) > 0 && !anyBool(anonymous, v.Anonymous) {
			return false
		}
		return true
	}, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", s)
}

func anyMatch(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok || p == name {
			return true
		}
	}
	return false
}

func anyBool(want []bool, got bool) bool {
	for _, w := range want {
		if w == got {
			return true
		}
	}
	return false
}
