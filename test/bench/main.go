// Command bench measures what each nri-volumes feature costs against
// containerd without the plugin. It starts its own containerds (one per
// configuration, side by side), drives them with crictl, interleaves the
// variants of each scenario round-robin so that a noisy machine slows all of
// them alike, and prints a markdown report: medians, p90s and ratios against
// each scenario's yardstick, with the machine, the date and the commit.
//
// It needs root; run it with `make bench` (see BENCHMARKS.md), or alone:
//
//	go run ./test/bench -out bin/bench-results.md
//	go run ./test/bench -only imagevolume,volumes -n 10
//
// Nothing it measures is an assertion: a missed target is reported, and the
// exit status is non-zero only when a scenario could not run.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

type options struct {
	n          int    // create+start samples per variant
	memCycles  int    // containers created and removed for the memory scenario
	memSample  int    // RSS sample every this many cycles
	pods       int    // pods started at once
	podRounds  int    // bursts per variant
	lsCounts   string // volume counts for volume ls
	lsReps     int    // samples per (count, variant)
	copyRounds int    // rounds of the 1 GiB copy-up benchmark
	largeBytes int64  // size of the copy-up benchmark's big file
	hookReps   int    // samples of the hook's exec time
	hookStore  int    // other volumes in the store for the hook's second run
	// sizedLsVolumes and sizedLsFiles shape the stores of the sizedls
	// scenario; sizedLsUnsized adds the unsized store it is compared with.
	sizedLsVolumes, sizedLsFiles int
	sizedLsUnsized               bool
	// snapBytes, snapFiles and snapReps shape the snapshot and cloneof
	// scenarios.
	snapBytes           int64
	snapFiles, snapReps int
	// regBytes, regFiles and regReps shape the registry scenario.
	regBytes          int64
	regFiles, regReps int
	regLayerSize      string
	// regPods pods are seeded at once from an artifact of regSeedBytes
	// in regSeedFiles files.
	regPods, regSeedFiles int
	regSeedBytes          int64
	baseline              string // an nri-volumes binary of an earlier commit to run beside this one
	only                  string // comma list of scenarios to run; empty: all
	out                   string // markdown report
	goBench               string // `go test -bench` output to append to the report
	goBenchCmd            string // the command that produced it, for the report
	keepGoing             bool
	scenarioList          []string
}

var scenarios = []string{"imagevolume", "imagevolumepod", "volumes", "memory", "pods", "ls", "copyup", "hook", "sized", "sizedls", "snapshot", "cloneof"}

// optionalScenarios run only when -only names them: at their default size
// they take long (registry: gzip and upload 1 GiB several times).
var optionalScenarios = []string{"registry"}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100, "create+start samples per variant (after one warm-up); the targets ask for 50 or more")
	flag.IntVar(&o.memCycles, "mem-cycles", 1000, "containers created and removed in the memory scenario")
	flag.IntVar(&o.memSample, "mem-sample", 100, "sample the plugin's RSS every this many containers")
	flag.IntVar(&o.pods, "pods", 100, "pods started at once in the pods scenario")
	flag.IntVar(&o.podRounds, "pod-rounds", 3, "bursts of pods per variant")
	flag.StringVar(&o.lsCounts, "ls-counts", "1000,5000,10000", "volume counts for the volume ls scenario")
	flag.IntVar(&o.lsReps, "ls-reps", 5, "samples per volume count and variant")
	flag.IntVar(&o.copyRounds, "copy-rounds", 3, "rounds of the copy-up benchmark with the big file")
	flag.Int64Var(&o.largeBytes, "large-bytes", 1<<30, "size of the copy-up benchmark's big file")
	flag.IntVar(&o.hookReps, "hook-reps", 30, "samples of the copy-up hook's exec time")
	flag.IntVar(&o.hookStore, "hook-store", 10000, "other volumes in the store for the hook on a full store")
	flag.IntVar(&o.sizedLsVolumes, "sized-ls-volumes", 1000, "volumes in the stores of the sizedls scenario")
	flag.IntVar(&o.sizedLsFiles, "sized-ls-files", 1000, "files in each volume of the sizedls scenario")
	flag.BoolVar(&o.sizedLsUnsized, "sized-ls-unsized", true, "sizedls: also make and list the same volumes unsized (a walk of every file)")
	flag.Int64Var(&o.snapBytes, "snap-bytes", 1<<30, "snapshot, cloneof: bytes in the volume")
	flag.IntVar(&o.snapFiles, "snap-files", 20000, "snapshot, cloneof: files the bytes are spread over")
	flag.IntVar(&o.snapReps, "snap-reps", 10, "snapshot: snapshots, clones and cp -a per file system")
	flag.Int64Var(&o.regBytes, "reg-bytes", 1<<30, "registry: bytes in the volume pushed and pulled")
	flag.IntVar(&o.regFiles, "reg-files", 20000, "registry: files the bytes are spread over")
	flag.IntVar(&o.regReps, "reg-reps", 3, "registry: rounds of push, pull and cp -a")
	flag.IntVar(&o.regPods, "reg-pods", 50, "registry: pods seeded at once from one artifact with from:")
	flag.Int64Var(&o.regSeedBytes, "reg-seed-bytes", 64<<20, "registry: bytes in the artifact the pods are seeded from")
	flag.IntVar(&o.regSeedFiles, "reg-seed-files", 200, "registry: files in the artifact the pods are seeded from")
	flag.StringVar(&o.regLayerSize, "reg-layer-size", "16Mi", "registry: volume push --layer-size (shrink it with -reg-bytes to keep the number of layers)")
	flag.StringVar(&o.baseline, "baseline", "", "an nri-volumes binary built from an earlier commit: imagevolume and volumes also run it, interleaved, for a before/after on the same noise")
	flag.StringVar(&o.only, "only", "", "comma list of scenarios to run (default all but "+strings.Join(optionalScenarios, ",")+"): "+strings.Join(append(scenarios, optionalScenarios...), ","))
	flag.StringVar(&o.out, "out", "bin/bench-results.md", "write the markdown report here too")
	flag.StringVar(&o.goBench, "gobench", "", "output of `go test -bench` to put in the report")
	flag.StringVar(&o.goBenchCmd, "gobench-cmd", "", "the command that produced -gobench")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (it runs containerd)")
		os.Exit(1)
	}
	o.scenarioList = scenarios
	if o.only != "" {
		o.scenarioList = strings.Split(o.only, ",")
		for _, s := range o.scenarioList {
			if !contains(scenarios, s) && !contains(optionalScenarios, s) {
				fmt.Fprintf(os.Stderr, "bench: -only: unknown scenario %q (known: %s)\n", s, strings.Join(append(scenarios, optionalScenarios...), ","))
				os.Exit(2)
			}
		}
	}
	root, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if err := os.Chdir(root); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}

	r := &runner{}
	rep := &report{started: time.Now()}
	rep.machine = machineInfo()
	failed := run(r, &o, rep)
	r.close()

	md := rep.markdown(&o)
	fmt.Print("\n" + md)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err == nil {
			err = os.WriteFile(o.out, []byte(md), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: write report:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "bench: report written to %s\n", o.out)
	}
	if failed {
		os.Exit(1)
	}
}

// run runs the chosen scenarios; a scenario that fails is recorded and the
// next one still runs.
func run(r *runner, o *options, rep *report) (failed bool) {
	logf("building nri-volumes and the empty plugin")
	bins := harness.BaseRuntime(r)
	binDir := r.tempDir("bin")
	nv, err := harness.BuildPluginTo(binDir)
	if err != nil {
		r.Fatalf("%v", err)
	}
	bins.NRIVolumes = nv
	empty := filepath.Join(binDir, "emptyplugin")
	if out, err := exec.Command("go", "build", "-o", empty, "./test/bench/emptyplugin").CombinedOutput(); err != nil {
		r.Fatalf("build the empty plugin: %v\n%s", err, out)
	}
	env := &benchEnv{r: r, o: o, bins: bins, emptyPlugin: empty}
	for _, s := range o.scenarioList {
		start := time.Now()
		logf("=== scenario %s", s)
		err := r.try(func() {
			switch s {
			case "imagevolume":
				rep.add(env.imageVolume())
			case "imagevolumepod":
				rep.add(env.imageVolumeNewPod())
			case "volumes":
				rep.add(env.volumes())
			case "memory":
				rep.add(env.memory())
			case "pods":
				rep.add(env.pods())
			case "ls":
				rep.add(env.ls())
			case "copyup":
				rep.add(env.copyUp())
			case "hook":
				rep.add(env.hook())
			case "sized":
				rep.add(env.sized())
			case "sizedls":
				rep.add(env.sizedLs())
			case "snapshot":
				rep.add(env.snapshot())
			case "cloneof":
				rep.add(env.cloneOfStart())
			case "registry":
				rep.add(env.registryScenario())
			}
		})
		if err != nil {
			failed = true
			rep.add(&section{id: s, title: s, err: err.Error()})
			logf("scenario %s failed: %v", s, err)
		}
		logf("=== scenario %s took %s", s, time.Since(start).Round(time.Second))
	}
	env.closeAll()
	return failed
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
