package harness

import (
	"reflect"
	"testing"

	"github.com/nri-volumes/nri-volumes/config"
)

// TestPluginConfigYAML checks that what the harness writes is a
// configuration the plugin accepts, with the values meant.
func TestPluginConfigYAML(t *testing.T) {
	in := PluginConfig{
		Root:             "/tmp/store with space",
		ContainerdRoot:   "/tmp/ctd",
		HookPath:         "/tmp/bin/nri-volumes",
		ImageVolumes:     "tmpfs",
		KeepAfterPod:     true,
		TmpfsDefaultSize: "32Mi",
		TmpfsMaxSize:     "64Mi",
		AllowedHostPaths: []string{"/srv/a", "/srv/b"},
	}
	cfg, err := config.Parse([]byte(in.YAML()))
	if err != nil {
		t.Fatalf("config.Parse:\n%s\n%v", in.YAML(), err)
	}
	if cfg.Root != in.Root || cfg.ContainerdRoot != in.ContainerdRoot || cfg.HookPath != in.HookPath ||
		string(cfg.ImageVolumes.Mode) != in.ImageVolumes || !cfg.AnonymousVolumes.KeepAfterPod ||
		cfg.Tmpfs.DefaultSize.String() != "32Mi" || cfg.Tmpfs.MaxSize.String() != "64Mi" ||
		!reflect.DeepEqual(cfg.BindMounts.AllowedHostPaths, in.AllowedHostPaths) {
		t.Errorf("parsed %+v from\n%s", cfg, in.YAML())
	}
}
