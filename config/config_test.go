package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string // substring; empty: no error
		check   func(t *testing.T, c *Config)
	}{
		{name: "empty document gives defaults", doc: "", check: func(t *testing.T, c *Config) {
			if c.Root != "/var/lib/nri-volumes" || c.ImageVolumes != (ImageVolumes{Mode: ImageVolumeAnonymous, PodOverride: true}) || c.Tmpfs.DefaultSize != 64<<20 {
				t.Errorf("defaults not applied: %+v", c)
			}
		}},
		{name: "full document", doc: `
root: /srv/vols/
containerdRoot: /var/lib/containerd
hookPath: /usr/local/bin/nri-volumes-hook
imageVolumes: tmpfs
anonymousVolumes:
  keepAfterPod: true
tmpfs:
  defaultSize: 32Mi
  maxSize: 2Gi
bindMounts:
  allowedHostPaths: [/srv/data/]
`, check: func(t *testing.T, c *Config) {
			if c.Root != "/srv/vols" {
				t.Errorf("root not cleaned: %q", c.Root)
			}
			if c.ImageVolumes != (ImageVolumes{Mode: ImageVolumeTmpfs, PodOverride: true}) || !c.AnonymousVolumes.KeepAfterPod {
				t.Errorf("modes not read: %+v", c)
			}
			if c.Tmpfs.DefaultSize != 32<<20 || c.Tmpfs.MaxSize != 2<<30 {
				t.Errorf("sizes: %v %v", c.Tmpfs.DefaultSize, c.Tmpfs.MaxSize)
			}
			if len(c.BindMounts.AllowedHostPaths) != 1 || c.BindMounts.AllowedHostPaths[0] != "/srv/data" {
				t.Errorf("allowedHostPaths: %v", c.BindMounts.AllowedHostPaths)
			}
		}},
		{name: "size as plain bytes", doc: "tmpfs: {defaultSize: 1048576}", check: func(t *testing.T, c *Config) {
			if c.Tmpfs.DefaultSize != 1<<20 {
				t.Errorf("got %v", c.Tmpfs.DefaultSize)
			}
		}},
		{name: "unknown top-level key", doc: "rooot: /x", wantErr: `unknown field "rooot"`},
		{name: "unknown nested key", doc: "tmpfs: {defaultSzie: 1Mi}", wantErr: `unknown field "defaultSzie"`},
		{name: "bad mode", doc: "imageVolumes: bind", wantErr: `imageVolumes`},
		{name: "imageVolumes mapping", doc: "imageVolumes: {mode: ignore, podOverride: false}", check: func(t *testing.T, c *Config) {
			if c.ImageVolumes != (ImageVolumes{Mode: ImageVolumeIgnore, PodOverride: false}) {
				t.Errorf("imageVolumes = %+v", c.ImageVolumes)
			}
		}},
		{name: "imageVolumes mapping defaults", doc: "imageVolumes: {podOverride: false}", check: func(t *testing.T, c *Config) {
			if c.ImageVolumes != (ImageVolumes{Mode: ImageVolumeAnonymous, PodOverride: false}) {
				t.Errorf("imageVolumes = %+v", c.ImageVolumes)
			}
		}},
		{name: "lockTimeout", doc: "lockTimeout: 800ms", check: func(t *testing.T, c *Config) {
			if c.LockTimeout != Duration(800*time.Millisecond) {
				t.Errorf("lockTimeout = %v", c.LockTimeout)
			}
		}},
		{name: "lockTimeout default", doc: "", check: func(t *testing.T, c *Config) {
			if c.LockTimeout != Duration(1500*time.Millisecond) {
				t.Errorf("lockTimeout = %v, want 1.5s", c.LockTimeout)
			}
		}},
		{name: "lockTimeout without unit", doc: "lockTimeout: 1500", wantErr: `duration 1500: want a string with a unit`},
		{name: "lockTimeout zero", doc: "lockTimeout: 0s", wantErr: `lockTimeout 0s`},
		{name: "imageVolumes unknown key", doc: "imageVolumes: {mode: tmpfs, podOverides: false}", wantErr: `imageVolumes: unknown field "podOverides"`},
		{name: "imageVolumes bad mode in mapping", doc: "imageVolumes: {mode: bind}", wantErr: `imageVolumes`},
		{name: "imageVolumes bad podOverride", doc: "imageVolumes: {podOverride: sometimes}", wantErr: `imageVolumes`},
		{name: "relative root", doc: "root: vols", wantErr: `root: "vols" is not an absolute path`},
		{name: "root is slash", doc: "root: /", wantErr: `the store cannot be /`},
		{name: "bad size", doc: `tmpfs: {maxSize: "1Mi,exec"}`, wantErr: `size "1Mi,exec"`},
		{name: "negative size", doc: "tmpfs: {maxSize: -1}", wantErr: `size "-1"`},
		{name: "copy-up budget per pod", doc: "limits: {copyUpMaxSizePerPod: 30Gi}", check: func(t *testing.T, c *Config) {
			if c.Limits.CopyUpMaxSizePerPod != 30<<30 {
				t.Errorf("copyUpMaxSizePerPod: %v", c.Limits.CopyUpMaxSizePerPod)
			}
		}},
		{name: "bad copy-up budget per pod", doc: `limits: {copyUpMaxSizePerPod: "1Gi,x"}`, wantErr: `size "1Gi,x"`},
		{name: "misspelt copy-up budget per pod", doc: `limits: {copyUpMaxSizePod: 1Gi}`, wantErr: `unknown field "copyUpMaxSizePod"`},
		{name: "default above max", doc: "tmpfs: {defaultSize: 2Gi, maxSize: 1Gi}", wantErr: `tmpfs.defaultSize 2Gi is above tmpfs.maxSize 1Gi`},
		{name: "sizes", doc: "sizes: {backend: image, defaultSize: 1Gi, maxSize: 10Gi}\nlimits: {namespaceBytes: 100Gi}", check: func(t *testing.T, c *Config) {
			if c.Sizes.Backend != "image" || c.Sizes.DefaultSize != 1<<30 || c.Sizes.MaxSize != 10<<30 || c.Limits.NamespaceBytes != 100<<30 {
				t.Errorf("sizes: %+v, namespaceBytes %v", c.Sizes, c.Limits.NamespaceBytes)
			}
		}},
		{name: "sizes off by default, at most 1Ti", doc: "", check: func(t *testing.T, c *Config) {
			if c.Sizes.Backend != "auto" || c.Sizes.DefaultSize != 0 || c.Sizes.MaxSize != 1<<40 || c.Limits.NamespaceBytes != 0 {
				t.Errorf("sizes: %+v, namespaceBytes %v", c.Sizes, c.Limits.NamespaceBytes)
			}
		}},
		{name: "overcommit 1 by default", doc: "", check: func(t *testing.T, c *Config) {
			if c.Limits.Overcommit != 1 {
				t.Errorf("limits.overcommit = %g, want 1", c.Limits.Overcommit)
			}
		}},
		{name: "overcommit set", doc: "limits: {overcommit: 2.5}", check: func(t *testing.T, c *Config) {
			if c.Limits.Overcommit != 2.5 {
				t.Errorf("limits.overcommit = %g, want 2.5", c.Limits.Overcommit)
			}
		}},
		{name: "overcommit negative", doc: "limits: {overcommit: -1}", wantErr: "limits.overcommit -1"},
		{name: "maxSize 0 is the ceiling", doc: "sizes: {maxSize: 0}", check: func(t *testing.T, c *Config) {
			if c.Sizes.MaxSize != MaxVolumeSize {
				t.Errorf("sizes.maxSize 0 became %v, want the ceiling %v", c.Sizes.MaxSize, MaxVolumeSize)
			}
		}},
		{name: "maxSize above the ceiling", doc: "sizes: {maxSize: 17Ti}", wantErr: `sizes.maxSize 17Ti is above the ceiling of 16Ti`},
		{name: "bad backend", doc: "sizes: {backend: xfs}", wantErr: `sizes.backend: "xfs": want auto or image`},
		{name: "btrfs backend refused", doc: "sizes: {backend: btrfs}", wantErr: `sizes.backend: "btrfs": a btrfs qgroup limit does not hold against a pod that makes a subvolume`},
		{name: "default size above max", doc: "sizes: {defaultSize: 2Gi, maxSize: 1Gi}", wantErr: `sizes.defaultSize 2Gi is above sizes.maxSize 1Gi`},
		{name: "relative allowed path", doc: "bindMounts: {allowedHostPaths: [data]}", wantErr: `bindMounts.allowedHostPaths[0]`},
		{name: "malformed yaml", doc: "root: [", wantErr: "invalid configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("Parse() error = %v, want one containing %q wrapping ErrInvalid", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"64Mi", 64 << 20, true}, {"1Gi", 1 << 30, true}, {"512k", 512000, true}, {"10", 10, true},
		{"0", 0, true}, {"", 0, false}, {"Mi", 0, false}, {"1.5Gi", 0, false}, {"-1Mi", 0, false},
		{"1Mi,exec", 0, false}, {"99999999999Ti", 0, false}, {"1 Mi", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("root: /tmp/store\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || c.Root != "/tmp/store" {
		t.Fatalf("Load() = %+v, %v", c, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("Load() of a missing file succeeded")
	}
	if c, err := Load(""); err != nil || c.Root != Default().Root {
		t.Fatalf("Load(\"\") = %+v, %v", c, err)
	}
}
