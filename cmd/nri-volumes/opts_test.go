package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
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
		{"color=blue", `unknown option "color"`},
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

func TestParseCreateOptsSize(t *testing.T) {
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
	testutil.RequireRoot(t, "sized volumes need root")
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
	if last := r.stdoutLines[len(r.stdoutLines)-1]; !strings.HasPrefix(last, "Total sizes of the node's 1 sized volume(s): 8.0MiB on a ") ||
		!strings.Contains(last, "overcommit 0.00x") || !strings.Contains(last, "(limits.overcommit 1)") {
		t.Errorf("ls -s totals: %q", last)
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

// TestVolumeCreateOverTheDisk checks the node's bound on sizes that holds by
// default: sized volumes reserve nothing, and two volumes each of about the
// size of the store's file system would promise twice the disk.
func TestVolumeCreateOverTheDisk(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	root := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	// Three fifths of the file system each, in MiB.
	size := fmt.Sprintf("size=%dMi", int64(st.Blocks)*st.Bsize*3/5>>20)
	mustCLI(t, root, "create", "--opt", size, "first")
	r := runCLI(t, root, "", "create", "--opt", size, "second")
	if r.code == 0 {
		t.Fatalf("a second volume of %s made the sizes exceed the store's file system", size)
	}
	for _, want := range []string{"limits.overcommit", "of the store's file system", "over the limit"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the refusal does not say %q: %s", want, r.stderr)
		}
	}
}

func TestParseCreateOptsInodes(t *testing.T) {
	for _, tc := range []struct {
		specs   []string
		want    int64
		wantErr string
	}{
		{specs: []string{"size=1Gi", "inodes=100000"}, want: 100000},
		{specs: []string{"inodes=0"}, wantErr: `inodes wants a number from 1 to 4294967295`},
		{specs: []string{"inodes=1e6"}, wantErr: `inodes wants a number`},
		{specs: []string{"inodes=4294967296"}, wantErr: `inodes wants a number`},
	} {
		opts, err := parseCreateOpts(tc.specs)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), `--opt "inodes=`) {
				t.Errorf("parseCreateOpts(%q) = %v, want an error with %q", tc.specs, err, tc.wantErr)
			}
			continue
		}
		if err != nil || opts.Inodes != tc.want {
			t.Errorf("parseCreateOpts(%q) = %+v, %v; want inodes %d", tc.specs, opts, err, tc.want)
		}
	}
}

// TestVolumeCreateInodesCLI: -o inodes=N shows in inspect; without a size
// it is refused, naming inodes, and nothing is made.
func TestVolumeCreateInodesCLI(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	root := t.TempDir()
	mustCLI(t, root, "create", "-o", "size=16Mi", "-o", "inodes=50000", "many")
	if r := mustCLI(t, root, "inspect", "--format", "{{.Inodes}}", "many"); r.stdout != "50000\n" {
		t.Errorf("inspect Inodes: %q", r.stdout)
	}
	r := runCLI(t, root, "", "create", "-o", "inodes=5000", "unsized")
	if r.code != 1 || !strings.Contains(r.stderr, "inodes") || !strings.Contains(r.stderr, "size") {
		t.Errorf("create -o inodes without a size: %+v", r)
	}
	if r := mustCLI(t, root, "ls", "-q"); r.stdout != "many\n" {
		t.Errorf("a refused create left a volume: %q", r.stdout)
	}
}
