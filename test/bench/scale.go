package main

// The scenarios of scale and footprint: memory over many containers, a burst
// of pods, volume ls over many volumes, a large copy-up and the hook alone.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// memory: the plugin process's RSS while containers with volumes are
// created and removed, read from /proc/PID/status.
func (e *benchEnv) memory() *section {
	v := e.newVariant("nri-volumes", harness.ContainerdOptions{}, nriVolumes, harness.PluginConfig{}, appImage)
	rss0, _, err := harness.ProcStatus(v.pluginPID)
	if err != nil {
		e.r.Fatalf("plugin status: %v", err)
	}
	type point struct {
		n        int
		rss, hwm int64
	}
	points := []point{{0, rss0, rss0}}
	step := max(e.o.memSample, 1)
	start := time.Now()
	for done := 0; done < e.o.memCycles; {
		chunk := min(step, e.o.memCycles-done)
		// A new pod per chunk; removing it removes its anonymous volumes.
		p := e.mustPod(v, fmt.Sprintf("mem%d", done), nil)
		base := done
		errs := parallel(chunk, 2, func(i int) error {
			id, err := v.createContainer(p, fmt.Sprintf("m%d", base+i), appImage.Name,
				map[string]string{podKey: "- mem-shared:/named\n- /anon\n- {type: tmpfs, target: /scratch, size: 4Mi}"})
			if err != nil {
				return err
			}
			return v.removeContainer(id)
		})
		for _, err := range errs {
			if err != nil {
				e.r.Fatalf("create/remove: %v", err)
			}
		}
		if err := v.removePod(p); err != nil {
			e.r.Fatalf("remove pod: %v", err)
		}
		done += chunk
		rss, hwm, err := harness.ProcStatus(v.pluginPID)
		if err != nil {
			e.r.Fatalf("plugin status: %v", err)
		}
		points = append(points, point{done, rss, hwm})
		logf("  %d containers: plugin VmRSS %d KiB, VmHWM %d KiB", done, rss, hwm)
	}
	elapsed := time.Since(start)
	left, _ := os.ReadDir(filepath.Join(v.storeRoot, "volumes", "default"))

	// Growth: the least-squares slope of RSS over the second half of the
	// samples, once the Go heap has reached its working size.
	half := points[len(points)/2:]
	var sx, sy, sxx, sxy float64
	for _, p := range half {
		x, y := float64(p.n), float64(p.rss)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	k := float64(len(half))
	slope := 0.0
	if d := k*sxx - sx*sx; d != 0 {
		slope = (k*sxy - sx*sy) / d
	}
	last := points[len(points)-1]
	var rows [][]string
	for _, p := range points {
		rows = append(rows, []string{fmt.Sprint(p.n), fmt.Sprintf("%.1f MiB", float64(p.rss)/1024), fmt.Sprintf("%.1f MiB", float64(p.hwm)/1024)})
	}
	okRSS := float64(last.hwm)/1024 < 40
	okGrowth := slope*1000 < 1024 // under 1 MiB per 1,000 containers, i.e. noise
	return &section{
		id:    "memory",
		title: "Plugin memory over container create/remove cycles",
		method: fmt.Sprintf("The `nri-volumes run` process (log level info) serves %d `crictl create` + `crictl rm` of containers that each ask for a named volume (shared), "+
			"an anonymous volume and a tmpfs, two at a time; a new pod per %d containers, removed after them. VmRSS and VmHWM are read from /proc/PID/status after each batch. "+
			"Took %s (%.0f ms per container).", e.o.memCycles, step, elapsed.Round(time.Second), float64(elapsed.Milliseconds())/float64(max(e.o.memCycles, 1))),
		header: []string{"containers created and removed", "VmRSS", "VmHWM (peak)"},
		rows:   rows,
		notes: []string{
			fmt.Sprintf("growth over the second half of the run: %.2f KiB per container (least squares)", slope),
			fmt.Sprintf("volumes left in the store afterwards: %d (the shared named one is expected)", len(left)),
		},
		sums: []summary{
			{fmt.Sprintf("plugin RSS after %d containers", last.n), fmt.Sprintf("%.1f MiB (peak %.1f MiB)", float64(last.rss)/1024, float64(last.hwm)/1024),
				fmt.Sprintf("%.1f MiB at start", float64(rss0)/1024), fmt.Sprintf("%.2fx", float64(last.rss)/float64(rss0)), "< 40 MiB", verdict(okRSS)},
			{"plugin RSS growth per container", fmt.Sprintf("%.2f KiB", slope), "0", "", "no growth", verdict(okGrowth)},
		},
	}
}

// pods: a burst of pods started at once, all sharing one new named volume,
// against the same burst with no volumes on containerd without the plugin.
func (e *benchEnv) pods() *section {
	const (
		base   = "containerd, no plugin, no volumes"
		plugin = "nri-volumes, one new named volume shared by all"
	)
	vs := []*variant{
		e.newVariant(base, harness.ContainerdOptions{}, noPlugin, harness.PluginConfig{}, appImage),
		e.newVariant(plugin, harness.ContainerdOptions{}, nriVolumes, harness.PluginConfig{}, appImage),
	}
	wall := map[string]samples{}
	lat := map[string]samples{}
	failures := map[string]int{}
	var notes []string
	for round := 0; round < e.o.podRounds; round++ {
		for k := range vs {
			v := vs[(k+round)%len(vs)]
			var ann map[string]string
			shared := fmt.Sprintf("shared-%d", round)
			if v.name == plugin {
				ann = map[string]string{podKey: "- " + shared + ":/data"}
			}
			each := make(samples, e.o.pods)
			pods := make([]*pod, e.o.pods)
			logf("  round %d: %d pods on %q", round, e.o.pods, v.name)
			start := time.Now()
			errs := parallel(e.o.pods, e.o.pods, func(i int) error {
				t0 := time.Now()
				p, err := v.runPod(fmt.Sprintf("burst%d-%d", round, i), ann)
				if err != nil {
					return err
				}
				pods[i] = p
				_, err = v.runContainer(p, "app", appImage.Name, nil)
				each[i] = time.Since(t0)
				return err
			})
			d := time.Since(start)
			failed := 0
			for _, err := range errs {
				if err != nil {
					failed++
					if failed == 1 {
						notes = append(notes, fmt.Sprintf("%s, round %d: first failure: `%s`", v.name, round, strings.ReplaceAll(err.Error(), "\n", " ")))
					}
				}
			}
			failures[v.name] += failed
			wall[v.name] = append(wall[v.name], d)
			for i, s := range each {
				if errs[i] == nil {
					lat[v.name] = append(lat[v.name], s)
				}
			}
			logf("  round %d: %q took %s, %d failed", round, v.name, d.Round(time.Millisecond), failed)
			if v.name == plugin {
				res := harness.CmdResult{}
				out, err := exec.Command(e.bins.NRIVolumes, "volume", "inspect", "--root", v.storeRoot, shared).Output()
				res.Stdout, res.Err = string(out), err
				var info []struct{ UsedBy []string }
				if res.Err == nil && json.Unmarshal(out, &info) == nil && len(info) == 1 {
					notes = append(notes, fmt.Sprintf("round %d: volume %s used by %d containers after the burst", round, shared, len(info[0].UsedBy)))
				} else {
					notes = append(notes, fmt.Sprintf("round %d: volume inspect %s: %v", round, shared, res.Err))
				}
			}
			// Teardown is not timed.
			parallel(len(pods), 4, func(i int) error {
				if pods[i] != nil {
					return v.removePod(pods[i])
				}
				return nil
			})
		}
	}
	var rows [][]string
	for _, v := range vs {
		w, l := wall[v.name], lat[v.name]
		rows = append(rows, []string{v.name, fmt.Sprint(len(w)), ms(w.median()), ms(w.p90()), fmt.Sprintf("%.3fx", ratio(w.median(), wall[base].median())),
			ms(l.median()), ms(l.p90()), fmt.Sprint(failures[v.name])})
	}
	r := ratio(wall[plugin].median(), wall[base].median())
	allStarted := failures[plugin] == 0 && failures[base] == 0
	return &section{
		id:    "pods",
		title: fmt.Sprintf("%d pods at once sharing one new named volume", e.o.pods),
		method: fmt.Sprintf("Each burst starts %d goroutines at once, each running `crictl runp` + `crictl create` + `crictl start` for its own pod; "+
			"the wall time is from the first to the last one started. With the plugin every pod's annotation names the same new named volume (new per burst). "+
			"%d bursts per variant, alternating which goes first; pods are removed between bursts, untimed.", e.o.pods, e.o.podRounds),
		header: []string{"variant", "bursts", "wall median", "wall p90", "wall / yardstick", "per-pod median", "per-pod p90", "failed pods"},
		rows:   rows,
		notes:  notes,
		sums: []summary{
			{fmt.Sprintf("%d pods at once sharing one new named volume", e.o.pods), ms(wall[plugin].median()) + fmt.Sprintf(", %d failed", failures[plugin]),
				ms(wall[base].median()) + " (no plugin, no volumes)", fmt.Sprintf("%.3fx", r), "all start, <= 1.1x", verdict(allStarted && r <= 1.1)},
		},
	}
}

// ls: `nri-volumes volume ls` and `ls -s` over stores of several sizes,
// against a shell loop that cats every volume.json.
func (e *benchEnv) ls() *section {
	var counts []int
	for _, s := range strings.Split(e.o.lsCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			e.r.Fatalf("-ls-counts: bad count %q", s)
		}
		counts = append(counts, n)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		e.r.Fatalf("%v", err)
	}
	defer devNull.Close()
	type cmdVariant struct {
		name string
		args func(root string) []string
	}
	nv := e.bins.NRIVolumes
	cmds := []cmdVariant{
		{"shell loop: cat every volume.json", func(root string) []string {
			return []string{"bash", "-c", `for f in "$1"/volumes/default/*/volume.json; do cat "$f"; done >/dev/null`, "loop", root}
		}},
		{"nri-volumes volume ls", func(root string) []string { return []string{nv, "volume", "ls", "--root", root} }},
		{"nri-volumes volume ls -s", func(root string) []string { return []string{nv, "volume", "ls", "-s", "--root", root} }},
	}
	timeCmd := func(args []string) time.Duration {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout = devNull
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		d := time.Since(start)
		if err != nil {
			e.r.Fatalf("%v: %v: %s", args, err, stderr.String())
		}
		return d
	}
	var rows [][]string
	var sums []summary
	perVol := map[string]map[int]float64{}
	for _, n := range counts {
		root := e.r.tempDir("ls")
		s, err := volumes.Open(root)
		if err != nil {
			e.r.Fatalf("%v", err)
		}
		logf("  creating %d volumes", n)
		for i := 0; i < n; i++ {
			if _, err := s.Create("default", fmt.Sprintf("vol-%05d", i), volumes.CreateOptions{Labels: map[string]string{"app": "bench"}}); err != nil {
				e.r.Fatalf("%v", err)
			}
		}
		s.Close()
		res := map[string]samples{}
		for i := -1; i < e.o.lsReps; i++ {
			for k := range cmds {
				c := cmds[(k+max(i, 0))%len(cmds)]
				d := timeCmd(c.args(root))
				if i >= 0 {
					res[c.name] = append(res[c.name], d)
				}
			}
		}
		loop := res[cmds[0].name].median()
		for _, c := range cmds {
			m := res[c.name].median()
			if perVol[c.name] == nil {
				perVol[c.name] = map[int]float64{}
			}
			perVol[c.name][n] = float64(m.Microseconds()) / float64(n)
			rows = append(rows, []string{fmt.Sprint(n), c.name, ms(m), ms(res[c.name].p90()),
				fmt.Sprintf("%.1f µs", perVol[c.name][n]), fmt.Sprintf("%.3fx", ratio(m, loop))})
			if c.name != cmds[0].name {
				r := ratio(m, loop)
				sums = append(sums, summary{fmt.Sprintf("`%s` over %d volumes", strings.TrimPrefix(c.name, "nri-volumes "), n), ms(m),
					ms(loop) + " (shell loop)", fmt.Sprintf("%.3fx", r), "faster (< 1x)", verdict(r < 1)})
			}
		}
		os.RemoveAll(root)
	}
	// Linear means a flat marginal cost: the time each extra volume adds
	// between the two smallest stores against between the two largest
	// (process start and the like cancel out of both).
	var notes []string
	if len(counts) > 2 {
		a, b, c := counts[0], counts[len(counts)-2], counts[len(counts)-1]
		for _, cm := range cmds {
			t := func(n int) float64 { return perVol[cm.name][n] * float64(n) } // µs
			lo := (t(b) - t(a)) / float64(b-a)
			hi := (t(c) - t(b)) / float64(c-b)
			g := hi / lo
			notes = append(notes, fmt.Sprintf("%s: each extra volume costs %.1f µs between %d and %d volumes, %.1f µs between %d and %d (%.2fx)", cm.name, lo, a, b, hi, b, c, g))
			if cm.name == cmds[0].name {
				continue
			}
			sums = append(sums, summary{fmt.Sprintf("`%s` linear in volume count", strings.TrimPrefix(cm.name, "nri-volumes ")),
				fmt.Sprintf("%.1f µs/extra volume (%d→%d)", hi, b, c), fmt.Sprintf("%.1f µs/extra volume (%d→%d)", lo, a, b),
				fmt.Sprintf("%.2fx", g), "marginal cost flat (<= 1.5x)", verdict(g <= 1.5)})
		}
	}
	return &section{
		id:    "ls",
		title: "volume ls over many volumes",
		method: fmt.Sprintf("Stores of each size are made with the volumes package (empty volumes with one label, namespace default). Each sample is one whole process, "+
			"output to /dev/null; %d samples per command and size, round-robin, after a warm-up (so the page cache is warm for all).", e.o.lsReps),
		header: []string{"volumes", "command", "median", "p90", "median per volume", "median / shell loop"},
		rows:   rows,
		notes:  notes,
		sums:   sums,
	}
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(\d+(?:\.\d+)?) ns/op(.*)$`)

// copyUp runs the copy-up Go benchmarks (BenchmarkCopy against BenchmarkCpA)
// with a big file of -large-bytes, once per process, -copy-rounds times.
func (e *benchEnv) copyUp() *section {
	dir := e.r.tempDir("copyup")
	bin := filepath.Join(dir, "copyup.test")
	if out, err := exec.Command("go", "test", "-c", "-o", bin, "./volumes/copyup").CombinedOutput(); err != nil {
		e.r.Fatalf("build copyup benchmarks: %v\n%s", err, out)
	}
	res := map[string]samples{}
	extra := map[string]string{}
	for round := 0; round < e.o.copyRounds; round++ {
		logf("  copy-up round %d (large file %d bytes)", round, e.o.largeBytes)
		cmd := exec.Command(bin, "-test.run", "^$", "-test.bench", "^Benchmark(Copy|CpA)$", "-test.benchtime", "1x", "-test.benchmem", "-test.timeout", "30m")
		cmd.Env = append(os.Environ(), fmt.Sprintf("COPYUP_BENCH_LARGE_BYTES=%d", e.o.largeBytes))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			e.r.Fatalf("copyup benchmarks: %v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			ns, _ := strconv.ParseFloat(m[2], 64)
			res[m[1]] = append(res[m[1]], time.Duration(ns))
			extra[m[1]] = strings.Join(strings.Fields(m[3]), " ")
		}
	}
	cp, cpA := res["BenchmarkCopy"], res["BenchmarkCpA"]
	if len(cp) == 0 || len(cpA) == 0 {
		e.r.Fatalf("copyup benchmarks printed no results")
	}
	r := ratio(cp.median(), cpA.median())
	return &section{
		id:    "copyup",
		title: fmt.Sprintf("Copy-up of 20,000 small files + one %d MiB file", e.o.largeBytes>>20),
		method: fmt.Sprintf("`volumes/copyup` BenchmarkCopy (the hook's copy) against BenchmarkCpA (`cp -a` of the same tree on the same file system, %s), "+
			"`COPYUP_BENCH_LARGE_BYTES=%d`, `-benchtime 1x`, one process per round (the tree is rebuilt each time), %d rounds; each copy starts after a sync.",
			os.TempDir(), e.o.largeBytes, e.o.copyRounds),
		header: []string{"benchmark", "samples", "median", "p90", "last run's other metrics", "median / cp -a"},
		rows: [][]string{
			{"BenchmarkCopy (nri-volumes)", fmt.Sprint(len(cp)), ms(cp.median()), ms(cp.p90()), extra["BenchmarkCopy"], fmt.Sprintf("%.3fx", r)},
			{"BenchmarkCpA (cp -a)", fmt.Sprint(len(cpA)), ms(cpA.median()), ms(cpA.p90()), extra["BenchmarkCpA"], "1.000x"},
		},
		sums: []summary{
			{fmt.Sprintf("copy-up of 20,000 small files + one %d MiB file", e.o.largeBytes>>20), ms(cp.median()), ms(cpA.median()) + " (`cp -a`)", fmt.Sprintf("%.3fx", r), "<= 1.0x", verdict(r <= 1.0)},
		},
	}
}

// hook: the exec time of `nri-volumes hook copyup` on the image volume
// scenario's tiny tree, by itself: what runc waits for in createRuntime.
func (e *benchEnv) hook() *section {
	dir := e.r.tempDir("hook")
	bundle := filepath.Join(dir, "bundle")
	data := filepath.Join(bundle, "rootfs", "data")
	for d := 0; d < 2; d++ {
		sub := filepath.Join(data, fmt.Sprintf("d%d", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			e.r.Fatalf("%v", err)
		}
		for f := 0; f < 16; f++ {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%02d", f)), []byte(strings.Repeat("x", 1024)), 0o644); err != nil {
				e.r.Fatalf("%v", err)
			}
		}
	}
	if err := os.Symlink("d0/f00", filepath.Join(data, "latest")); err != nil {
		e.r.Fatalf("%v", err)
	}
	state, _ := json.Marshal(map[string]any{"ociVersion": "1.2.0", "id": "bench", "status": "creating", "pid": os.Getpid(), "bundle": bundle})
	// The hook reads the container's user and id mappings from the bundle.
	spec, _ := json.Marshal(map[string]any{"ociVersion": "1.2.0", "process": map[string]any{"user": map[string]any{"uid": 0, "gid": 0}}})
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o600); err != nil {
		e.r.Fatalf("%v", err)
	}
	root := filepath.Join(dir, "store")
	s, err := volumes.Open(root)
	if err != nil {
		e.r.Fatalf("%v", err)
	}
	defer s.Close()
	bigRoot := filepath.Join(dir, "bigstore")
	big, err := volumes.Open(bigRoot)
	if err != nil {
		e.r.Fatalf("%v", err)
	}
	defer big.Close()
	logf("  creating %d volumes", e.o.hookStore)
	for i := 0; i < e.o.hookStore; i++ {
		if _, err := big.Create("default", fmt.Sprintf("other-%05d", i), volumes.CreateOptions{}); err != nil {
			e.r.Fatalf("%v", err)
		}
	}
	nv := e.bins.NRIVolumes
	hk := harness.HookBeside(nv)
	run := func(stdin []byte, args ...string) time.Duration {
		cmd := exec.Command(args[0], args[1:]...)
		if stdin != nil {
			cmd.Stdin = strings.NewReader(string(stdin))
		}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		if err != nil {
			e.r.Fatalf("%v: %v: %s", args, err, out)
		}
		return d
	}
	type op struct {
		name string
		fn   func(i int) time.Duration
	}
	ops := []op{
		{"/bin/true (exec floor)", func(int) time.Duration { return run(nil, "/bin/true") }},
		{"nri-volumes version (Go binary start)", func(int) time.Duration { return run(nil, nv, "version") }},
		{"nri-volumes-hook --help (hook binary start)", func(int) time.Duration { return run(nil, hk, "--help") }},
		{"nri-volumes hook copyup (32 files)", func(i int) time.Duration {
			name := fmt.Sprintf("h%d", i+1)
			if _, err := s.Create("default", name, volumes.CreateOptions{}); err != nil {
				e.r.Fatalf("%v", err)
			}
			return run(state, nv, "hook", "copyup", "--root", root, "--volume", "default/"+name+"=/data")
		}},
		{"nri-volumes hook copyup, nothing at the target", func(i int) time.Duration {
			name := fmt.Sprintf("e%d", i+1)
			if _, err := s.Create("default", name, volumes.CreateOptions{}); err != nil {
				e.r.Fatalf("%v", err)
			}
			return run(state, nv, "hook", "copyup", "--root", root, "--volume", "default/"+name+"=/nothing-here")
		}},
		{"nri-volumes-hook copyup (32 files)", func(i int) time.Duration {
			name := fmt.Sprintf("k%d", i+1)
			if _, err := s.Create("default", name, volumes.CreateOptions{}); err != nil {
				e.r.Fatalf("%v", err)
			}
			return run(state, hk, "copyup", "--root", root, "--volume", "default/"+name+"=/data")
		}},
		{"nri-volumes-hook copyup, nothing at the target", func(i int) time.Duration {
			name := fmt.Sprintf("m%d", i+1)
			if _, err := s.Create("default", name, volumes.CreateOptions{}); err != nil {
				e.r.Fatalf("%v", err)
			}
			return run(state, hk, "copyup", "--root", root, "--volume", "default/"+name+"=/nothing-here")
		}},
		{fmt.Sprintf("nri-volumes hook copyup (32 files), %d other volumes in the store", e.o.hookStore), func(i int) time.Duration {
			name := fmt.Sprintf("h%d", i+1)
			if _, err := big.Create("default", name, volumes.CreateOptions{}); err != nil {
				e.r.Fatalf("%v", err)
			}
			return run(state, nv, "hook", "copyup", "--root", bigRoot, "--volume", "default/"+name+"=/data")
		}},
		{"cp -a of the same 32 files", func(i int) time.Duration {
			dst := filepath.Join(dir, fmt.Sprintf("cp%d", i+1))
			if err := os.Mkdir(dst, 0o755); err != nil {
				e.r.Fatalf("%v", err)
			}
			return run(nil, "cp", "-a", data+"/.", dst)
		}},
	}
	res := map[string]samples{}
	for i := -1; i < e.o.hookReps; i++ {
		for k := range ops {
			o := ops[(k+max(i, 0))%len(ops)]
			d := o.fn(i)
			if i >= 0 {
				res[o.name] = append(res[o.name], d)
			}
		}
	}
	for _, v := range []string{"h1", "k1"} {
		if _, err := os.Stat(filepath.Join(root, "volumes", "default", v, "_data", "d1", "f15")); err != nil {
			e.r.Fatalf("the hook did not copy into %s: %v", v, err)
		}
	}
	var names []string
	for _, o := range ops {
		names = append(names, o.name)
	}
	rows := resultRows(names, res, ops[0].name)
	fi, _ := os.Stat(nv)
	hfi, _ := os.Stat(hk)
	return &section{
		id:    "hook",
		title: "The copy-up hook's exec time by itself",
		method: fmt.Sprintf("What runc waits for in the createRuntime hook, outside any container: `nri-volumes hook copyup` with an OCI state on stdin, "+
			"filling a new volume from the image volume scenario's tree (32 files of 1 KiB, 2 directories, a symlink); against the floor of "+
			"starting any process and the Go binaries (nri-volumes %.1f MiB, nri-volumes-hook %.1f MiB) doing nothing. The same hook run by both binaries: "+
			"`nri-volumes hook copyup` (hookPath before the hook binary) and `nri-volumes-hook copyup` (hookPath's default now). "+
			"Also the hook when the image has nothing at the target (what every new named or anonymous "+
			"volume pays), and the hook on a store that holds %d other volumes. %d samples each, round-robin.", float64(fi.Size())/(1<<20), float64(hfi.Size())/(1<<20), e.o.hookStore, e.o.hookReps),
		header: resultHeader,
		rows:   rows,
	}
}
