package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/hook"
)

// hookBundle makes an OCI bundle whose rootfs has what test/bench's image
// has at its VOLUME /data: 32 files of 1 KiB in two directories and a
// symlink. The hook reads config.json and copies from rootfs.
func hookBundle(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "bundle")
	for d := 0; d < 2; d++ {
		sub := filepath.Join(dir, "rootfs", "data", fmt.Sprintf("d%d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		for f := 0; f < 16; f++ {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%02d", f)), bytes.Repeat([]byte{'x'}, 1024), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := os.Symlink("d0/f00", filepath.Join(dir, "rootfs", "data", "latest")); err != nil {
		b.Fatal(err)
	}
	spec := `{"ociVersion":"1.2.0","process":{"user":{"uid":0,"gid":0},"cwd":"/"},"root":{"path":"rootfs"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkImageVolumeHook is the plugin's part of a container start with
// containerd's image volumes off (ignore_image_defined_volumes = true): an
// image with VOLUME /data, whose anonymous volume the copy-up hook fills.
// Each iteration times CreateContainer through NRI, the hook (run in this
// process, from the arguments the plugin gave it) and StartContainer;
// removing the container, and its pod, is not timed.
//
// pod=same puts every container in one pod, as test/bench's imagevolume
// scenario does; pod=new gives each its own, as a Deployment's replicas
// have: the difference is what a pod's first container costs.
func BenchmarkImageVolumeHook(b *testing.B) {
	b.Run("pod=same", func(b *testing.B) { benchImageVolumeHook(b, false) })
	b.Run("pod=new", func(b *testing.B) { benchImageVolumeHook(b, true) })
}

func benchImageVolumeHook(b *testing.B, newPods bool) {
	rt := newRuntime(b, func(c *config.Config) { c.Root = filepath.Join(b.TempDir(), "store") })
	rt.connect()
	digest := rt.writeImageConfig(`{"architecture":"amd64","os":"linux","config":{"Volumes":{"/data":{}}}}`)
	bundle := hookBundle(b)
	ctx := context.Background()
	pod := newPod("pod-same", "default", nil)
	removePod := func(pod *api.PodSandbox) {
		if err := rt.nri.RemovePodSandbox(ctx, &adaptation.RemovePodSandboxRequest{Pod: pod}); err != nil {
			b.Fatal(err)
		}
	}
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n := strconv.Itoa(i)
		b.StopTimer()
		if newPods {
			pod = newPod("pod-"+n, "default", nil)
		}
		ctr := newContainer("ctr-"+n, pod.Id, "app-"+n)
		ctr.Image = &api.Image{Name: "localhost/vol:bench", ConfigDigest: digest}
		state, err := json.Marshal(map[string]any{"ociVersion": "1.2.0", "id": ctr.Id, "status": "creating", "bundle": bundle})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		start := time.Now()
		adj, err := rt.create(pod, ctr)
		if err != nil {
			b.Fatal(err)
		}
		hooks := adj.GetHooks().GetCreateRuntime()
		if len(hooks) != 1 {
			b.Fatalf("container %d: %d createRuntime hooks, want the copy-up hook", i, len(hooks))
		}
		if err := hook.Run(hooks[0].Args[2:], bytes.NewReader(state)); err != nil {
			b.Fatalf("container %d: hook: %v", i, err)
		}
		if err := rt.start(pod, ctr, adj); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))

		b.StopTimer()
		if got, err := os.ReadFile(filepath.Join(findMount(adj, "/data").Source, "d1", "f15")); err != nil || len(got) != 1024 {
			b.Fatalf("container %d: /data/d1/f15 after copy-up: %d bytes, %v", i, len(got), err)
		}
		if err := rt.nri.RemoveContainer(ctx, &adaptation.RemoveContainerRequest{Pod: pod, Container: ctr}); err != nil {
			b.Fatal(err)
		}
		switch {
		case newPods:
			removePod(pod)
		case (i+1)%100 == 0:
			// limits.volumesPerPod: each container leaves its anonymous
			// volume in the pod until the pod goes.
			removePod(pod)
			pod = newPod("pod-same-"+n, "default", nil)
		}
		// Containers start tens of milliseconds apart (runc, the shim).
		time.Sleep(10 * time.Millisecond)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(percentile(durations, 50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(durations, 90).Microseconds()), "p90-µs")
}
