package harness

import (
	"os"
	"path/filepath"
)

// OldRuntime returns the runtime of Runtime with containerd and its shim
// replaced by the older release that hack/install-runtime.sh builds into
// CACHE_DIR/containerd-old (CONTAINERD_OLD_VERSION in hack/versions.env),
// and that version.
func OldRuntime(t TB) (*Bins, string) {
	t.Helper()
	b := Runtime(t)
	versions, err := Versions()
	if err != nil {
		t.Fatalf("%v", err)
	}
	version := versions["CONTAINERD_OLD_VERSION"]
	if version == "" {
		t.Fatalf("hack/versions.env has no CONTAINERD_OLD_VERSION")
	}
	old := *b
	old.Dir = filepath.Join(b.Dir, "containerd-old")
	old.Containerd = filepath.Join(old.Dir, "containerd")
	old.Shim = filepath.Join(old.Dir, "containerd-shim-runc-v2")
	for _, p := range []string{old.Containerd, old.Shim} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("containerd %s: %v (hack/install-runtime.sh builds it)", version, err)
		}
	}
	return &old, version
}
