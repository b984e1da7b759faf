package plugin

import (
	"testing"

	"github.com/nri-volumes/nri-volumes/config"
)

// TestPlanBoundsVolumeSizeByDefault: with the default configuration an
// untrusted annotation must not be able to ask for any size at all. A new
// sized volume's mkfs.ext4 runs inside the CreateContainer request under the
// store's exclusive lock: 15TiB takes 1.5 s and writes 219MiB, a petabyte
// (possible on an XFS host) hits the 30 s mkfsTimeout, far past
// containerd's 2 s NRI timeout, and blocks every other request meanwhile.
func TestPlanBoundsVolumeSizeByDefault(t *testing.T) {
	cfg := config.Default()
	items, err := ParseVolumes(VolumesKey, "- {source: db, target: /data, size: 1024Ti}", cfg.Tmpfs)
	if err != nil {
		t.Fatal(err)
	}
	req := CreateRequest{Items: items, Namespace: "shop", PodName: "web", PodSandboxID: "pod1",
		ContainerID: "c1", ContainerName: "app", ItemsKey: VolumesKey}
	if _, err := MakePlan(cfg, &req); err == nil {
		t.Fatal("MakePlan accepted a 1PiB sized volume with the default configuration")
	}
}
