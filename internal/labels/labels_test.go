package labels

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	many := map[string]string{}
	for i := range Max + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		ok     bool
	}{
		{"none", nil, true},
		{"plain", map[string]string{"app": "redis", "tier": ""}, true},
		{"too many", many, false},
		{"empty key", map[string]string{"": "v"}, false},
		{"equals in key", map[string]string{"a=b": "v"}, false},
		{"newline in key", map[string]string{"a\nb": "v"}, false},
		{"NUL in value", map[string]string{"a": "x\x00y"}, false},
		{"too long", map[string]string{"a": strings.Repeat("x", MaxBytes)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Validate(tc.labels); (err == nil) != tc.ok {
				t.Errorf("Validate: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
