package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// samples are durations of one variant.
type samples []time.Duration

func (s samples) sorted() []time.Duration {
	c := append([]time.Duration(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

// median is the middle sample (the mean of the two middle ones).
func (s samples) median() time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := s.sorted()
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// p90 is the nearest-rank 90th percentile.
func (s samples) p90() time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := s.sorted()
	i := (len(c)*90 + 99) / 100
	return c[max(i-1, 0)]
}

func (s samples) min() time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s.sorted()[0]
}

// ms formats a duration in milliseconds with a precision that suits it.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f ms", f)
	case f >= 10:
		return fmt.Sprintf("%.1f ms", f)
	default:
		return fmt.Sprintf("%.2f ms", f)
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// summary is one row of the report's first table: a target of the issue.
type summary struct {
	target, measured, yardstick, ratio, goal, verdict string
}

// section is one scenario's part of the report.
type section struct {
	id, title string
	// what is measured and how, in a sentence or two.
	method string
	header []string
	rows   [][]string
	notes  []string
	sums   []summary
	err    string
}

type report struct {
	started  time.Time
	machine  [][2]string
	sections []*section
}

func (r *report) add(s *section) { r.sections = append(r.sections, s) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *report) markdown(o *options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# nri-volumes benchmark results\n\n")
	b.WriteString("| machine | |\n|---|---|\n")
	for _, kv := range r.machine {
		fmt.Fprintf(&b, "| %s | %s |\n", kv[0], kv[1])
	}
	fmt.Fprintf(&b, "| run took | %s |\n", time.Since(r.started).Round(time.Second))
	fmt.Fprintf(&b, "| settings | `-n %d -mem-cycles %d -pods %d -pod-rounds %d -ls-counts %s -ls-reps %d -copy-rounds %d -large-bytes %d -hook-reps %d -hook-store %d -sized-ls-volumes %d -sized-ls-files %d -sized-ls-unsized=%t -snap-bytes %d -snap-files %d -snap-reps %d -reg-bytes %d -reg-files %d -reg-reps %d -reg-layer-size %s -reg-pods %d -reg-seed-bytes %d -reg-seed-files %d` |\n",
		o.n, o.memCycles, o.pods, o.podRounds, o.lsCounts, o.lsReps, o.copyRounds, o.largeBytes, o.hookReps, o.hookStore,
		o.sizedLsVolumes, o.sizedLsFiles, o.sizedLsUnsized, o.snapBytes, o.snapFiles, o.snapReps, o.regBytes, o.regFiles, o.regReps, o.regLayerSize, o.regPods, o.regSeedBytes, o.regSeedFiles)
	if o.baseline != "" {
		fmt.Fprintf(&b, "| baseline | `-baseline %s` |\n", o.baseline)
	}
	b.WriteString("\n")

	b.WriteString("## Targets\n\n| target | measured | yardstick | ratio | goal | verdict |\n|---|---|---|---|---|---|\n")
	for _, s := range r.sections {
		if s.err != "" {
			fmt.Fprintf(&b, "| %s | failed to run | | | | **error** |\n", s.title)
		}
		for _, m := range s.sums {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", m.target, m.measured, m.yardstick, m.ratio, m.goal, m.verdict)
		}
	}
	if o.goBench != "" {
		for _, m := range requestSummaries(o.goBench) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", m.target, m.measured, m.yardstick, m.ratio, m.goal, m.verdict)
		}
	}
	b.WriteString("\n")
	for _, s := range r.sections {
		fmt.Fprintf(&b, "## %s\n\n", s.title)
		if s.err != "" {
			fmt.Fprintf(&b, "Failed: `%s`\n\n", strings.ReplaceAll(s.err, "\n", " "))
			continue
		}
		if s.method != "" {
			b.WriteString(s.method + "\n\n")
		}
		if len(s.header) > 0 {
			b.WriteString("| " + strings.Join(s.header, " | ") + " |\n")
			b.WriteString(strings.Repeat("|---", len(s.header)) + "|\n")
			for _, row := range s.rows {
				b.WriteString("| " + strings.Join(row, " | ") + " |\n")
			}
			b.WriteString("\n")
		}
		for _, n := range s.notes {
			b.WriteString("- " + n + "\n")
		}
		if len(s.notes) > 0 {
			b.WriteString("\n")
		}
	}
	if o.goBench != "" {
		data, err := os.ReadFile(o.goBench)
		b.WriteString("## Go benchmarks\n\n")
		if o.goBenchCmd != "" {
			fmt.Fprintf(&b, "`%s`\n\n", o.goBenchCmd)
		}
		if err != nil {
			fmt.Fprintf(&b, "(could not read %s: %v)\n", o.goBench, err)
		} else {
			b.WriteString("```\n")
			for _, line := range strings.Split(string(data), "\n") {
				if strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "pkg:") || strings.HasPrefix(line, "cpu:") ||
					strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- ") || strings.Contains(line, "bench_test.go") {
					b.WriteString(line + "\n")
				}
			}
			b.WriteString("```\n")
		}
	}
	return b.String()
}

// machineInfo describes the machine and the code measured.
func machineInfo() [][2]string {
	out := func(name string, args ...string) string {
		b, err := exec.Command(name, args...).Output()
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(string(b))
	}
	mem := "unknown"
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:")), "%d", &kb)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	tmpFS := out("findmnt", "-no", "FSTYPE,SOURCE", "-T", os.TempDir())
	commit := out("git", "rev-parse", "--short", "HEAD")
	if exec.Command("git", "diff-index", "--quiet", "HEAD", "--").Run() != nil {
		commit += " (with uncommitted changes)"
	}
	return [][2]string{
		{"date", time.Now().Format(time.RFC3339)},
		{"commit", commit},
		{"nproc", fmt.Sprint(runtime.NumCPU())},
		{"cpu", cpu},
		{"memory", mem},
		{"kernel", strings.TrimSpace(string(kernel))},
		{"filesystem of " + os.TempDir(), tmpFS},
		{"go", runtime.Version()},
	}
}
