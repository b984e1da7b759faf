package main

// The create+start scenarios: a container with an image volume, and one with
// a named, an anonymous and a tmpfs volume, against their yardsticks.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

const podKey = "volumes.noderesource.dev/pod"

// baselineName is the variant that runs the -baseline binary.
const baselineName = "nri-volumes, -baseline binary (an earlier commit)"

// interleave times op n times per variant after one untimed warm-up each,
// round-robin, starting each round with the next variant so that no variant
// is always first.
func (e *benchEnv) interleave(vs []*variant, n int, warm func(v *variant, i int), op func(v *variant, i int) time.Duration) map[string]samples {
	out := map[string]samples{}
	for i := -1; i < n; i++ {
		for k := range vs {
			v := vs[(k+max(i, 0))%len(vs)]
			if i < 0 {
				warm(v, i)
				continue
			}
			out[v.name] = append(out[v.name], op(v, i))
		}
		if i >= 0 && (i+1)%5 == 0 {
			logf("  %d/%d rounds", i+1, n)
		}
	}
	return out
}

// createStart is the timed operation of the first two scenarios: crictl
// create and crictl start of one container. Writing its CRI config (and the
// floor's host directories) before, and removing it after, are not timed.
func (e *benchEnv) createStart(v *variant, p *pod, name, image string, ann map[string]string, check func(id string)) time.Duration {
	path, err := v.containerConfig(name, image, ann)
	if err != nil {
		e.r.Fatalf("%s: container %s: %v", v.name, name, err)
	}
	defer os.Remove(path)
	start := time.Now()
	id, err := v.create(p, path)
	if err == nil {
		err = v.start(id)
	}
	d := time.Since(start)
	if err != nil {
		e.r.Fatalf("%s: run container %s: %v", v.name, name, err)
	}
	if check != nil {
		check(id)
	}
	if err := v.removeContainer(id); err != nil {
		e.r.Fatalf("%s: remove container %s: %v", v.name, name, err)
	}
	return d
}

func (e *benchEnv) mustPod(v *variant, name string, ann map[string]string) *pod {
	p, err := v.runPod(name, ann)
	if err != nil {
		e.r.Fatalf("%s: run pod %s: %v", v.name, name, err)
	}
	return p
}

func (e *benchEnv) exec(v *variant, id string, args ...string) string {
	res := v.cr.Run(append([]string{"exec", id}, args...)...)
	if res.Err != nil {
		e.r.Fatalf("%s: exec %v: %v", v.name, args, res.Err)
	}
	return res.Stdout
}

// resultRows renders one row per variant: median, p90, min, ratio of the
// median to the yardstick's.
func resultRows(names []string, res map[string]samples, yardstick string) [][]string {
	var rows [][]string
	for _, name := range names {
		s := res[name]
		rows = append(rows, []string{name, fmt.Sprint(len(s)), ms(s.median()), ms(s.p90()), ms(s.min()),
			fmt.Sprintf("%.3fx", ratio(s.median(), res[yardstick].median()))})
	}
	return rows
}

var resultHeader = []string{"variant", "samples", "median", "p90", "min", "median / yardstick"}

// pairedHeader is resultHeader for the interleaved create+start scenarios,
// with the per-round ratio beside the ratio of medians.
var pairedHeader = append(append([]string(nil), resultHeader...), "per-round ratio: median (90% CI)")

// pairedRows are resultRows with each variant's per-round ratio to the
// yardstick (see pairedRatio).
func pairedRows(names []string, res map[string]samples, yardstick string) [][]string {
	rows := resultRows(names, res, yardstick)
	for i, name := range names {
		rows[i] = append(rows[i], formatPaired(pairedRatio(res[name], res[yardstick])))
	}
	return rows
}

// pairedRatio compares two variants sampled by interleave, whose k-th
// samples were taken in the same round, a few hundred milliseconds apart:
// the median over rounds of a's sample over b's, and a 90% bootstrap
// interval of that median (2,000 resamples of the rounds, fixed seed). A
// change of the machine's load that lasts longer than a round moves both
// samples of a round alike, so it cancels here, where it shifts the
// medians of a busy run.
func pairedRatio(a, b samples) (med, lo, hi float64) {
	n := min(len(a), len(b))
	if n == 0 {
		return 0, 0, 0
	}
	rs := make([]float64, n)
	for k := range n {
		rs[k] = ratio(a[k], b[k])
	}
	medianOf := func(xs []float64) float64 {
		c := slices.Clone(xs)
		slices.Sort(c)
		if len(c)%2 == 1 {
			return c[len(c)/2]
		}
		return (c[len(c)/2-1] + c[len(c)/2]) / 2
	}
	rng := rand.New(rand.NewPCG(13, 5))
	boot := make([]float64, 2000)
	re := make([]float64, n)
	for i := range boot {
		for k := range re {
			re[k] = rs[rng.IntN(n)]
		}
		boot[i] = medianOf(re)
	}
	slices.Sort(boot)
	return medianOf(rs), boot[len(boot)*5/100], boot[len(boot)*95/100-1]
}

// withPaired is the ratio of medians r for the targets table, with the
// per-round ratio of a to b and its interval after it.
func withPaired(r float64, a, b samples) string {
	return fmt.Sprintf("%.3fx; per round %s", r, formatPaired(pairedRatio(a, b)))
}

func formatPaired(med, lo, hi float64) string {
	return fmt.Sprintf("%.3fx (%.3f-%.3f)", med, lo, hi)
}

// checkCopyUp is a warm-up check for a container of volImage on v: its
// /data holds the image's files, copied up.
func (e *benchEnv) checkCopyUp(v *variant) func(id string) {
	return func(id string) {
		if got := e.exec(v, id, "cat", "/data/d1/f15"); len(got) != 1024 {
			e.r.Fatalf("%s: /data/d1/f15 has %d bytes after copy-up, want 1024", v.name, len(got))
		}
	}
}

// imageVolume: create+start of a container whose image declares VOLUME
// /data over a small directory, against containerd's own image-volume
// handling.
func (e *benchEnv) imageVolume() *section {
	const (
		base    = "containerd, no plugin (its own image volumes)"
		plugin  = "nri-volumes (imageVolumes: volume)"
		ignored = "nri-volumes, containerd ignore_image_defined_volumes = true"
	)
	cfg := harness.PluginConfig{ImageVolumes: "volume"}
	vs := []*variant{
		e.newVariant(base, harness.ContainerdOptions{}, noPlugin, cfg, volImage),
		e.newVariant(plugin, harness.ContainerdOptions{}, nriVolumes, cfg, volImage),
		e.newVariant(ignored, harness.ContainerdOptions{IgnoreImageDefinedVolumes: true}, nriVolumes, cfg, volImage),
	}
	names := []string{base, plugin, ignored}
	if e.o.baseline != "" {
		vs = append(vs, e.newVariant(baselineName, harness.ContainerdOptions{}, baselineVolumes, cfg, volImage))
		names = append(names, baselineName)
	}
	pods := map[string]*pod{}
	for _, v := range vs {
		pods[v.name] = e.mustPod(v, "iv", nil)
	}
	res := e.interleave(vs, e.o.n,
		func(v *variant, _ int) { e.createStart(v, pods[v.name], "warm", volImage.Name, nil, e.checkCopyUp(v)) },
		func(v *variant, i int) time.Duration {
			return e.createStart(v, pods[v.name], fmt.Sprintf("c%d", i), volImage.Name, nil, nil)
		})
	r := ratio(res[plugin].median(), res[base].median())
	ri := ratio(res[ignored].median(), res[base].median())
	return &section{
		id:    "imagevolume",
		title: "Container create+start with one image volume",
		method: fmt.Sprintf("Each sample is `crictl create` + `crictl start` of a new container (a new container name in the same pod, so every sample copies up afresh) "+
			"of an image with `VOLUME /data` over 32 files of 1 KiB in 2 directories and a symlink; removing it is not timed. "+
			"With containerd's image volumes on, containerd copies /data before NRI and nri-volumes takes that copy over (no hook); with them off, its hook copies. "+
			"One containerd per variant, all running at once, sampled round-robin, %d samples each after a warm-up that checks the copy-up.", e.o.n),
		header: pairedHeader,
		rows:   pairedRows(names, res, base),
		sums: []summary{
			{"create+start, one image volume (copy-up of a small dir)", ms(res[plugin].median()), ms(res[base].median()) + " (containerd's own image volumes)", withPaired(r, res[plugin], res[base]), "<= 1.05x", verdict(r <= 1.05)},
			{"same, containerd's image volumes off (`ignore_image_defined_volumes`)", ms(res[ignored].median()), ms(res[base].median()), withPaired(ri, res[ignored], res[base]), "<= 1.05x", verdict(ri <= 1.05)},
		},
	}
}

// imageVolumeNewPod is imageVolume with a new pod for every sample, as a
// Deployment's replicas and rollouts have: the pod is started before the
// timing and removed after it, so the deletion of each pod's anonymous
// volume runs beside later samples (issue 19: the hook path measured 1.14x
// and 1.18x so, against 1.05x in one pod).
func (e *benchEnv) imageVolumeNewPod() *section {
	const (
		base    = "containerd, no plugin (its own image volumes)"
		plugin  = "nri-volumes (imageVolumes: volume), adopts containerd's copy"
		ignored = "nri-volumes, containerd ignore_image_defined_volumes = true (the hook copies)"
		before  = baselineName + ", ignore_image_defined_volumes = true"
	)
	cfg := harness.PluginConfig{ImageVolumes: "volume"}
	ignore := harness.ContainerdOptions{IgnoreImageDefinedVolumes: true}
	vs := []*variant{
		e.newVariant(base, harness.ContainerdOptions{}, noPlugin, cfg, volImage),
		e.newVariant(plugin, harness.ContainerdOptions{}, nriVolumes, cfg, volImage),
		e.newVariant(ignored, ignore, nriVolumes, cfg, volImage),
	}
	names := []string{base, plugin, ignored}
	if e.o.baseline != "" {
		vs = append(vs, e.newVariant(before, ignore, baselineVolumes, cfg, volImage))
		names = append(names, before)
	}
	inNewPod := func(v *variant, name string, check func(string)) time.Duration {
		p := e.mustPod(v, "ivp-"+name, nil)
		d := e.createStart(v, p, name, volImage.Name, nil, check)
		if err := v.removePod(p); err != nil {
			e.r.Fatalf("%s: remove pod: %v", v.name, err)
		}
		return d
	}
	res := e.interleave(vs, e.o.n,
		func(v *variant, _ int) { inNewPod(v, "warm", e.checkCopyUp(v)) },
		func(v *variant, i int) time.Duration { return inNewPod(v, fmt.Sprintf("c%d", i), nil) })
	r := ratio(res[plugin].median(), res[base].median())
	ri := ratio(res[ignored].median(), res[base].median())
	sums := []summary{
		{"create+start in a new pod, one image volume (adopted)", ms(res[plugin].median()), ms(res[base].median()) + " (containerd's own image volumes)", withPaired(r, res[plugin], res[base]), "<= 1.05x", verdict(r <= 1.05)},
		{"same, containerd's image volumes off (`ignore_image_defined_volumes`, the hook copies)", ms(res[ignored].median()), ms(res[base].median()), withPaired(ri, res[ignored], res[base]), "<= 1.05x", verdict(ri <= 1.05)},
	}
	if e.o.baseline != "" {
		rb := ratio(res[before].median(), res[base].median())
		sums = append(sums, summary{"same, the -baseline binary (before)", ms(res[before].median()), ms(res[base].median()), withPaired(rb, res[before], res[base]), "", ""})
	}
	return &section{
		id:    "imagevolumepod",
		title: "Container create+start with one image volume, a new pod each",
		method: fmt.Sprintf("As imagevolume, but each container is the only one of a new pod: `crictl runp` before the timing, `crictl rm` and `crictl rmp` after it "+
			"(neither timed), so the plugin deletes each pod's anonymous volume in the background while later samples run, as a Deployment's pods come and go. "+
			"Each sample is `crictl create` + `crictl start` of the container. One containerd per variant, all running at once, sampled round-robin, %d samples each after a warm-up that checks the copy-up.", e.o.n),
		header: pairedHeader,
		rows:   pairedRows(names, res, base),
		sums:   sums,
	}
}

// volumesAnnotation is one named volume (new per container), one anonymous
// volume and one tmpfs.
func volumesAnnotation(named string) map[string]string {
	return map[string]string{podKey: fmt.Sprintf("- %s:/named\n- /anon\n- {type: tmpfs, target: /scratch, size: 4Mi}", named)}
}

// podContainers is how many containers the volumes scenario starts in one
// pod, well below the default limits.volumesPerPod (256).
const podContainers = 100

// volumes: create+start with a named volume, a tmpfs and an anonymous
// volume, against an NRI plugin that does nothing.
func (e *benchEnv) volumes() *section {
	const (
		none   = "containerd, no plugin"
		floor  = "containerd, no plugin, the same three mounts from the CRI config (floor)"
		empty  = "empty NRI plugin"
		plugin = "nri-volumes"
	)
	vs := []*variant{
		e.newVariant(none, harness.ContainerdOptions{}, noPlugin, harness.PluginConfig{}, appImage),
		e.newVariant(floor, harness.ContainerdOptions{}, noPlugin, harness.PluginConfig{}, appImage),
		e.newVariant(empty, harness.ContainerdOptions{}, emptyNRI, harness.PluginConfig{}, appImage),
		e.newVariant(plugin, harness.ContainerdOptions{}, nriVolumes, harness.PluginConfig{}, appImage),
	}
	vs[1].criMounts = e.floorMounts()
	names := []string{none, floor, empty, plugin}
	if e.o.baseline != "" {
		vs = append(vs, e.newVariant(baselineName, harness.ContainerdOptions{}, baselineVolumes, harness.PluginConfig{}, appImage))
		names = append(names, baselineName)
	}
	pods := map[string]*pod{}
	for _, v := range vs {
		pods[v.name] = e.mustPod(v, "vols", nil)
	}
	res := e.interleave(vs, e.o.n,
		func(v *variant, _ int) {
			e.createStart(v, pods[v.name], "warm", appImage.Name, volumesAnnotation("warm"), func(id string) {
				if v.name != plugin && v.name != floor && v.name != baselineName {
					return
				}
				mounts := e.exec(v, id, "cat", "/proc/mounts")
				for _, t := range []string{" /named ", " /anon ", " /scratch tmpfs "} {
					if !strings.Contains(mounts, t) {
						e.r.Fatalf("%s: no %q in /proc/mounts:\n%s", v.name, t, mounts)
					}
				}
			})
		},
		func(v *variant, i int) time.Duration {
			// Each container leaves an anonymous volume in its pod until
			// the pod goes; a new pod (untimed) every podContainers
			// containers keeps below limits.volumesPerPod.
			if i > 0 && i%podContainers == 0 {
				if err := v.removePod(pods[v.name]); err != nil {
					e.r.Fatalf("%s: remove pod: %v", v.name, err)
				}
				pods[v.name] = e.mustPod(v, fmt.Sprintf("vols-%d", i/podContainers), nil)
			}
			return e.createStart(v, pods[v.name], fmt.Sprintf("c%d", i), appImage.Name, volumesAnnotation(fmt.Sprintf("named-%d", i)), nil)
		})
	r := ratio(res[plugin].median(), res[empty].median())
	rf := ratio(res[plugin].median(), res[floor].median())
	return &section{
		id:    "volumes",
		title: "Container create+start with a named volume, a tmpfs and an anonymous volume",
		method: fmt.Sprintf("Each sample is `crictl create` + `crictl start` of a container whose annotation asks for a new named volume, an anonymous volume and a 4 MiB tmpfs "+
			"(the image has nothing at those paths, so nothing is copied up; after the warm-up's hook has recorded that for the image, nri-volumes adds no hook). The empty NRI plugin (test/bench/emptyplugin) subscribes to CreateContainer and returns nothing; "+
			"it gets the same annotation. The floor is what the mounts themselves cost runc: the same container on containerd without any plugin, "+
			"its CRI config mounting two host directories made beforehand (untimed, new for each container) and a 4 MiB tmpfs mounted on the host beforehand, "+
			"as kubelet does for an emptyDir. %d samples per variant, round-robin.", e.o.n),
		header: pairedHeader,
		rows:   pairedRows(names, res, empty),
		sums: []summary{
			{"create+start, named + tmpfs + anonymous volume", ms(res[plugin].median()), ms(res[empty].median()) + " (empty NRI plugin)", withPaired(r, res[plugin], res[empty]), "<= 1.05x", verdict(r <= 1.05)},
			{"same, against the mounts from the CRI config", ms(res[plugin].median()), ms(res[floor].median()) + " (CRI-mount floor, no plugin)", withPaired(rf, res[plugin], res[floor]), "<= 1.05x", verdict(rf <= 1.05)},
		},
	}
}

// floorMounts returns the CRI mounts of the floor variant's containers: a
// new host directory each for /named and /anon, made here, before the
// timing starts, and one 4 MiB tmpfs on the host for /scratch, as kubelet
// mounts an emptyDir of medium Memory and hands it to the runtime.
func (e *benchEnv) floorMounts() func(name string) []map[string]any {
	dir := e.r.tempDir("floor")
	scratch := filepath.Join(dir, "scratch")
	if err := os.Mkdir(scratch, 0o755); err != nil {
		e.r.Fatalf("%v", err)
	}
	if err := unix.Mount("tmpfs", scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m"); err != nil {
		e.r.Fatalf("mount a tmpfs at %s: %v", scratch, err)
	}
	e.r.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })
	return func(name string) []map[string]any {
		mounts := []map[string]any{{"container_path": "/scratch", "host_path": scratch}}
		for _, t := range []string{"named", "anon"} {
			host := filepath.Join(dir, name+"-"+t)
			if err := os.Mkdir(host, 0o755); err != nil {
				e.r.Fatalf("%v", err)
			}
			mounts = append(mounts, map[string]any{"container_path": "/" + t, "host_path": host})
		}
		return mounts
	}
}
