package main

// The scenarios of sized volumes: create+start with a new sized volume
// against a new unsized one, and ls -s over sized volumes against unsized.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// sized: create+start of a container with a new 1 GiB volume (mkfs.ext4, a
// loop device, a mount) against one with a new unsized volume.
func (e *benchEnv) sized() *section {
	const (
		unsized = "nri-volumes, new unsized named volume"
		sized   = "nri-volumes, new 1 GiB named volume (image backend)"
	)
	vs := []*variant{
		e.newVariant(unsized, harness.ContainerdOptions{}, nriVolumes, harness.PluginConfig{}, appImage),
		e.newVariant(sized, harness.ContainerdOptions{}, nriVolumes, harness.PluginConfig{Extra: "sizes: {backend: image}\n"}, appImage),
	}
	pods := map[string]*pod{}
	for _, v := range vs {
		pods[v.name] = e.mustPod(v, "sized", nil)
	}
	ann := func(v *variant, name string) map[string]string {
		if v.name == sized {
			return map[string]string{podKey: fmt.Sprintf("- {source: %s, target: /data, size: 1Gi}", name)}
		}
		return map[string]string{podKey: fmt.Sprintf("- %s:/data", name)}
	}
	res := e.interleave(vs, e.o.n,
		func(v *variant, _ int) {
			e.createStart(v, pods[v.name], "warm", appImage.Name, ann(v, "warm"), func(id string) {
				if v.name != sized {
					return
				}
				if df := e.exec(v, id, "df", "-k", "/data"); !strings.Contains(df, "/data") || strings.Contains(df, "overlay") {
					e.r.Fatalf("%s: /data is not the sized file system:\n%s", v.name, df)
				}
			})
		},
		func(v *variant, i int) time.Duration {
			return e.createStart(v, pods[v.name], fmt.Sprintf("c%d", i), appImage.Name, ann(v, fmt.Sprintf("vol-%d", i)), nil)
		})
	r := ratio(res[sized].median(), res[unsized].median())
	extra := res[sized].median() - res[unsized].median()
	return &section{
		id:    "sized",
		title: "Container create+start with a new sized volume",
		method: fmt.Sprintf("Each sample is `crictl create` + `crictl start` of a container whose annotation asks for a new named volume: 1 GiB "+
			"(mkfs.ext4 of a sparse file, twice to size it so df shows 1 GiB, a loop device and a mount, all inside the plugin's CreateContainer) or unsized. "+
			"Removing the container is not timed (it unmounts the sized volume). %d samples per variant, round-robin.", e.o.n),
		header: resultHeader,
		rows:   resultRows([]string{unsized, sized}, res, unsized),
		notes:  []string{fmt.Sprintf("a sized volume adds %s to the start of the container that makes it; NRI's request timeout is 2 s", ms(extra))},
		sums: []summary{
			{"create+start with a new 1 GiB sized volume", ms(res[sized].median()), ms(res[unsized].median()) + " (new unsized volume)",
				fmt.Sprintf("%.3fx", r), "well inside NRI's 2 s timeout (< 500 ms more)", verdict(extra < 500*time.Millisecond)},
		},
	}
}

// sizedLs: `volume ls -s` over stores of sized volumes holding files,
// measured from their superblocks, against the same unsized, measured by a
// walk.
func (e *benchEnv) sizedLs() *section {
	n, files := e.o.sizedLsVolumes, e.o.sizedLsFiles
	nv := e.bins.NRIVolumes
	type store struct {
		name, root string
	}
	var stores []store
	kinds := []bool{true}
	if e.o.sizedLsUnsized {
		kinds = append(kinds, false)
	}
	for _, isSized := range kinds {
		root := e.r.tempDir("sizedls")
		name := fmt.Sprintf("%d unsized volumes", n)
		if isSized {
			name = fmt.Sprintf("%d sized volumes (64 MiB each, image backend)", n)
		}
		logf("  making %s of %d files each", name, files)
		e.fillStore(root, n, files, isSized)
		stores = append(stores, store{name, root})
	}
	res := map[string]samples{}
	for i := -1; i < e.o.lsReps; i++ {
		for k := range stores {
			st := stores[(k+max(i, 0))%len(stores)]
			cmd := exec.Command(nv, "volume", "ls", "-s", "--root", st.root)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			start := time.Now()
			err := cmd.Run()
			d := time.Since(start)
			if err != nil {
				e.r.Fatalf("volume ls -s: %v: %s", err, stderr.String())
			}
			if i >= 0 {
				res[st.name] = append(res[st.name], d)
			}
		}
	}
	var rows [][]string
	for _, st := range stores {
		m := res[st.name].median()
		rows = append(rows, []string{st.name, fmt.Sprint(len(res[st.name])), ms(m), ms(res[st.name].p90()),
			fmt.Sprintf("%.1f µs", float64(m.Microseconds())/float64(n))})
	}
	sec := &section{
		id:    "sizedls",
		title: "volume ls -s over sized volumes",
		method: fmt.Sprintf("Stores of %d volumes holding %d files of 100 bytes each, made with the volumes package; the sized volumes are not in use, "+
			"so `ls -s` reads each one's ext4 superblock (O(1) per volume), while an unsized volume is walked like du. "+
			"Each sample is one whole `nri-volumes volume ls -s` process, output discarded; %d samples, round-robin, after a warm-up. "+
			"-sized-ls-unsized=false skips the unsized store.", n, files, e.o.lsReps),
		header: []string{"store", "samples", "median", "p90", "median per volume"},
		rows:   rows,
	}
	if len(stores) == 2 {
		s, u := res[stores[0].name].median(), res[stores[1].name].median()
		sec.sums = []summary{{fmt.Sprintf("`ls -s` over %d sized volumes of %d files", n, files), ms(s), ms(u) + " (the same unsized, walked)",
			fmt.Sprintf("%.3fx", ratio(s, u)), "faster (< 1x)", verdict(s < u)}}
	}
	for _, st := range stores {
		unmountUnder(st.root)
	}
	return sec
}

// fillStore makes n volumes of files files each below root; a sized volume
// is acquired (mounted) to be filled and released (unmounted) after.
func (e *benchEnv) fillStore(root string, n, files int, sized bool) {
	s, err := volumes.Open(root, volumes.WithSizePolicy(volumes.SizePolicy{Backend: volumes.BackendImage}))
	if err != nil {
		e.r.Fatalf("%v", err)
	}
	defer s.Close()
	content := []byte(strings.Repeat("x", 100))
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("vol-%05d", i)
		opts := volumes.CreateOptions{}
		if sized {
			opts.Size = 64 << 20
		}
		if _, err := s.Create("default", name, opts); err != nil {
			e.r.Fatalf("%v", err)
		}
		vols, _, err := s.Acquire("filler", []volumes.Request{{Namespace: "default", Name: name}}, nil)
		if err != nil {
			e.r.Fatalf("%v", err)
		}
		for f := 0; f < files; f++ {
			if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, fmt.Sprintf("f%04d", f)), content, 0o644); err != nil {
				e.r.Fatalf("%v", err)
			}
		}
		if err := s.Release("filler"); err != nil {
			e.r.Fatalf("%v", err)
		}
		if (i+1)%100 == 0 {
			logf("  %d/%d volumes", i+1, n)
		}
	}
}

// unmountUnder unmounts what a failed fill left mounted below root, so the
// temporary directory can go.
func unmountUnder(root string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	lines := strings.Split(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 4 && strings.HasPrefix(f[4], root+"/") {
			syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}
