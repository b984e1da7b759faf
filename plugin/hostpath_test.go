package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nri-volumes/nri-volumes/config"
)

// TestOpenBindSource checks the policy of bind sources: the allowlist, the
// paths that are never allowed, and that no symlink is ever followed.
func TestOpenBindSource(t *testing.T) {
	hostDir := t.TempDir()
	allowed := filepath.Join(hostDir, "allowed")
	outside := filepath.Join(hostDir, "outside")
	for _, d := range []string{allowed + "/conf/sub", outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(allowed, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(allowed, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		allowed + "/escape": outside, allowed + "/inner": "conf", allowed + "/conf/up": "..", hostDir + "/allowed-link": "allowed",
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.Root = filepath.Join(hostDir, "store")
	cfg.BindMounts.AllowedHostPaths = []string{allowed}
	viaLink := *cfg
	viaLink.BindMounts.AllowedHostPaths = []string{filepath.Join(hostDir, "allowed-link")}
	openAllow := *cfg
	openAllow.BindMounts.AllowedHostPaths = []string{"/"}
	openAllow.Root = "/var/lib/nri-volumes"

	tests := []struct {
		name    string
		cfg     *config.Config
		src     string
		wantErr string
		wantDir bool
	}{
		{name: "directory", cfg: cfg, src: allowed + "/conf/sub", wantDir: true},
		{name: "the allowed directory itself", cfg: cfg, src: allowed, wantDir: true},
		{name: "regular file", cfg: cfg, src: allowed + "/file"},
		{name: "allowed entry written through a symlink", cfg: &viaLink, src: hostDir + "/allowed-link/conf", wantDir: true},
		{name: "allowed entry under its real path", cfg: &viaLink, src: allowed + "/conf", wantDir: true},
		{name: "outside allowlist", cfg: cfg, src: outside, wantErr: "outside bindMounts.allowedHostPaths"},
		{name: "symlink leading outside", cfg: cfg, src: allowed + "/escape", wantErr: "symlink"},
		{name: "symlink on the way", cfg: cfg, src: allowed + "/escape/x", wantErr: "symlink"},
		{name: "symlink staying inside", cfg: cfg, src: allowed + "/inner/sub", wantErr: "symlink"},
		{name: "symlink to a parent", cfg: cfg, src: allowed + "/conf/up/conf", wantErr: "symlink"},
		{name: "missing", cfg: cfg, src: allowed + "/missing", wantErr: "no such file"},
		{name: "fifo", cfg: cfg, src: allowed + "/fifo", wantErr: "neither a directory nor a regular file"},
		{name: "/etc refused even when allowed", cfg: &openAllow, src: "/etc", wantErr: "never allowed"},
		{name: "parent of the store refused", cfg: &openAllow, src: "/var/lib", wantErr: "never allowed"},
		{name: "/ refused", cfg: &openAllow, src: "/", wantErr: "resolves to /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := openBindSource(tt.cfg, newDenySet(tt.cfg), tt.src)
			if tt.wantErr != "" {
				if err == nil {
					f.Close()
					t.Fatalf("openBindSource(%s) succeeded, want an error with %q", tt.src, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.src) {
					t.Fatalf("openBindSource(%s) = %v, want an error naming the source and %q", tt.src, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("openBindSource(%s) = %v", tt.src, err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil || st.IsDir() != tt.wantDir {
				t.Fatalf("opened %s: %v, %v; want a directory: %v", tt.src, st, err, tt.wantDir)
			}
		})
	}
}
