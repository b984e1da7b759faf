package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// requestTargets are the timings of Go benchmarks that must stay far below
// containerd's NRI request timeout (2 s): a request that outlives it gets
// the plugin dropped and the container started without its volumes.
var requestTargets = []struct {
	bench, metric, target string
	// yardstick is a metric of the same benchmark shown beside, and
	// yardLabel says what it is.
	yardstick, yardLabel string
}{
	{"BenchmarkSynchronize", "sync-max-ms", "Synchronize request, 50,000 volumes and 1,000 containers (longest)",
		"orphan-pass-ms", "the store-wide pass, now after the reply"},
	{"BenchmarkCreateContainerDuringPrune", "create-max-ms", "CreateContainer while `volume prune -a` removes 10,000 volumes (longest)",
		"prune-ms", "the prune"},
}

// requestGoal is what "far below 2 s" means in the report.
const requestGoalMs = 500

// goBenchMetrics reads the custom metrics of each benchmark line of `go test
// -bench` output: benchmark name (without the -CPUS suffix) -> unit -> value.
func goBenchMetrics(path string) map[string]map[string]float64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	out := map[string]map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				m[f[i+1]] = v
			}
		}
		out[name] = m
	}
	return out
}

// requestSummaries turns the request timings of the Go benchmarks into rows
// of the report's table of targets.
func requestSummaries(path string) []summary {
	metrics := goBenchMetrics(path)
	var sums []summary
	for _, t := range requestTargets {
		m, ok := metrics[t.bench]
		v, found := m[t.metric]
		if !ok || !found {
			sums = append(sums, summary{target: t.target, measured: "not run", goal: fmt.Sprintf("< %d ms", requestGoalMs), verdict: "**missed**"})
			continue
		}
		yard := ""
		if y, ok := m[t.yardstick]; ok {
			yard = fmt.Sprintf("%s: %.0f ms", t.yardLabel, y)
		}
		sums = append(sums, summary{
			target: t.target, measured: fmt.Sprintf("%.0f ms", v), yardstick: yard,
			ratio:   fmt.Sprintf("%.2f of NRI's 2 s", v/2000),
			goal:    fmt.Sprintf("< %d ms", requestGoalMs),
			verdict: verdict(v < requestGoalMs),
		})
	}
	return sums
}
