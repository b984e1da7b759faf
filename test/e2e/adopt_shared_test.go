package e2e

import (
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestImageVolumeSharedNamedVolume: a named volume that a running container
// mounts with nocopy, still empty, is filled in place when a second pod
// mounts it where its image declares a VOLUME: both containers see the
// image's content and each other's writes, and what the first wrote
// survives the second container's removal.
func TestImageVolumeSharedNamedVolume(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.ctd.Import(t, dbImage)
	writerPod := e.cr.RunPod("writer", "default", "uid-writer", map[string]string{podKey: "- shared:/shared:nocopy"})
	writer := e.cr.RunContainer(writerPod, "writer", appImage, nil, nil)
	dbPod := e.cr.RunPod("db", "default", "uid-db", map[string]string{podKey: "- shared:/data"})
	db, err := e.cr.CreateContainerSpec(dbPod, harness.ContainerSpec{Name: "db", Image: dbImage.Name})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	e.cr.Start(db)

	if got, _ := e.cr.ExecErr(writer, "cat", "/shared/seed.txt"); got != "seeded by the image\n" {
		t.Errorf("the writer's /shared/seed.txt = %q, want the db image's content", got)
	}
	e.cr.Sh(writer, "echo from-writer > /shared/written.txt")
	if got, _ := e.cr.ExecErr(db, "cat", "/data/written.txt"); got != "from-writer\n" {
		t.Errorf("db's /data/written.txt = %q, want what the writer wrote", got)
	}
	e.cr.Stop(db)
	e.cr.Rm(db)
	if got, _ := e.cr.ExecErr(writer, "cat", "/shared/written.txt"); got != "from-writer\n" {
		t.Errorf("after db's removal the writer's /shared/written.txt = %q, want it kept", got)
	}
}
