package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/volumes"
)

func TestParseCreateOpts(t *testing.T) {
	opts, err := parseCreateOpts([]string{"uid=1000", "gid=0", "mode=0770"})
	if err != nil {
		t.Fatal(err)
	}
	if opts.UID == nil || *opts.UID != 1000 || opts.GID == nil || *opts.GID != 0 || opts.Mode == nil || *opts.Mode != 0o770 {
		t.Errorf("parseCreateOpts = %+v", opts)
	}
	if opts, err := parseCreateOpts(nil); err != nil || opts.UID != nil || opts.GID != nil || opts.Mode != nil {
		t.Errorf("no options: %+v, %v", opts, err)
	}
	for _, tc := range []struct{ spec, want string }{
		{"size=1G", `unknown option "size"`},
		{"uid", "want KEY=VALUE"},
		{"=1", "want KEY=VALUE"},
		{"uid=-1", "uid wants a number"},
		{"gid=4294967295", "gid wants a number"},
		{"uid=root", "uid wants a number"},
		{"mode=0799", "octal mode"},
		{"mode=17777", "octal mode"},
	} {
		_, err := parseCreateOpts([]string{tc.spec})
		if !errors.Is(err, volumes.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.spec) {
			t.Errorf("parseCreateOpts(%q) = %v, want an error naming it and saying %q", tc.spec, err, tc.want)
		}
	}
	if _, err := parseCreateOpts([]string{"uid=1", "uid=2"}); err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("uid given twice: %v", err)
	}
}

func TestVolumeCreateOwnership(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "-o", "uid=1000", "--opt", "gid=1001", "--opt=mode=0750", "owned")
	var got []struct {
		UID, GID *int
		Mode     string
	}
	if err := json.Unmarshal([]byte(mustCLI(t, root, "inspect", "owned").stdout), &got); err != nil || len(got) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	if got[0].UID == nil || *got[0].UID != 1000 || got[0].GID == nil || *got[0].GID != 1001 || got[0].Mode != "0750" {
		t.Errorf("inspect shows UID %v GID %v Mode %q", got[0].UID, got[0].GID, got[0].Mode)
	}
	r := runCLI(t, root, "", "create", "-o", "color=blue", "other")
	if r.code == 0 || !strings.Contains(r.stderr, `"color"`) {
		t.Errorf("create -o color=blue: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := mustCLI(t, root, "ls", "-q"); r.stdout != "owned\n" {
		t.Errorf("a refused create left a volume: %q", r.stdout)
	}
}
