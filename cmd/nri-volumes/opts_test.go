package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/volumes"
)

func TestParseCreateOpts(t *testing.T) {
	for _, tc := range []struct {
		specs   []string
		want    int64
		wantErr string
	}{
		{specs: nil},
		{specs: []string{"size=10Gi"}, want: 10 << 30},
		{specs: []string{"size=512M"}, want: 512_000_000},
		{specs: []string{"size=0"}, wantErr: `size "0" must be positive`},
		{specs: []string{"size=1.5Gi"}, wantErr: `size "1.5Gi"`},
		{specs: []string{"size=1Gi", "size=2Gi"}, wantErr: "size given twice"},
		{specs: []string{"type=tmpfs"}, wantErr: `unknown option "type"`},
		{specs: []string{"size"}, wantErr: "want KEY=VALUE"},
	} {
		opts, err := parseCreateOpts(tc.specs)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseCreateOpts(%q) = %v, want an error with %q", tc.specs, err, tc.wantErr)
			}
			continue
		}
		if err != nil || opts.Size != tc.want {
			t.Errorf("parseCreateOpts(%q) = %+v, %v; want size %d", tc.specs, opts, err, tc.want)
		}
	}
}

// TestVolumeSizedCLI creates a sized volume with -o size=, sees its size and
// use in ls -s, ls --format json and inspect -s, grows it with update --size
// and has update refuse to shrink it.
func TestVolumeSizedCLI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sized volumes need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	root := t.TempDir()
	mustCLI(t, root, "create", "--opt", "size=8Mi", "small")
	mustCLI(t, root, "create", "plain")
	r := mustCLI(t, root, "ls", "-s")
	if !strings.Contains(r.stdoutLines[0], "SIZE") || !strings.Contains(r.stdoutLines[0], "LIMIT") {
		t.Errorf("ls -s header: %q", r.stdoutLines[0])
	}
	for _, l := range r.stdoutLines[1:] {
		f := strings.Fields(l)
		switch f[0] {
		case "small":
			if f[len(f)-1] != "8.0MiB" {
				t.Errorf("ls -s row of the sized volume: %q", l)
			}
		case "plain":
			if f[len(f)-1] != "-" {
				t.Errorf("ls -s row of the unsized volume: %q", l)
			}
		}
	}
	r = mustCLI(t, root, "ls", "--format", "json")
	var row volumes.Volume
	if err := json.Unmarshal([]byte(r.stdoutLines[1]), &row); err != nil || row.Name != "small" || row.Limit != 8<<20 || row.Backend != volumes.BackendImage {
		t.Errorf("ls --format json: %v %q", err, r.stdoutLines[1])
	}
	r = mustCLI(t, root, "inspect", "-s", "small")
	var vols []volumes.Volume
	if err := json.Unmarshal([]byte(r.stdout), &vols); err != nil || len(vols) != 1 || vols[0].Limit != 8<<20 || vols[0].Size == nil {
		t.Fatalf("inspect -s: %v %q", err, r.stdout)
	}
	mustCLI(t, root, "update", "--size", "16Mi", "small")
	r = mustCLI(t, root, "inspect", "small")
	if err := json.Unmarshal([]byte(r.stdout), &vols); err != nil || vols[0].Limit != 16<<20 {
		t.Errorf("after update --size 16Mi: %v %q", err, r.stdout)
	}
	r = runCLI(t, root, "", "update", "--size", "4Mi", "small")
	if r.code == 0 || !strings.Contains(r.stderr, "shrinking from 16MiB to 4MiB is not supported") {
		t.Errorf("shrinking: %+v", r)
	}
	r = runCLI(t, root, "", "update", "--size", "4Mi", "plain")
	if r.code == 0 || !strings.Contains(r.stderr, "has no size") {
		t.Errorf("growing an unsized volume: %+v", r)
	}
	mustCLI(t, root, "rm", "small")
	if _, err := os.Stat(filepath.Join(root, "volumes", "default", "small")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after rm: %v", err)
	}
}

// TestVolumeCreateMaxSize checks that a configured sizes.maxSize bounds
// `volume create -o size=` and names the key.
func TestVolumeCreateMaxSize(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("root: "+root+"\nsizes: {maxSize: 1Gi}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, root, "", "create", "--config", cfg, "-o", "size=2Gi", "big")
	if r.code == 0 || !strings.Contains(r.stderr, "size 2GiB is above sizes.maxSize 1GiB") {
		t.Errorf("create above maxSize: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(root, "volumes", "default", "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused volume exists: %v", err)
	}
}
