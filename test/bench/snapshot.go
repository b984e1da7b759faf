package main

// The scenarios of snapshots and clones (issue 21): snapshot and clone of a
// sized volume full of files while a writer fsyncs into it, on the host's
// file system and on an xfs with reflinks, against cp -a of the same tree;
// and create+start of a container whose volume is a cloneOf against one
// with a new empty volume.

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/test/harness"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// fillTree writes files files holding bytes in all below dir, from one
// random block, so that nothing is a hole and nothing compresses.
func (e *benchEnv) fillTree(dir string, bytes int64, files int) {
	block := make([]byte, 64<<10)
	if _, err := rand.Read(block); err != nil {
		e.r.Fatalf("%v", err)
	}
	per := bytes / int64(files)
	for i := 0; i < files; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/200))
		if i%200 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				e.r.Fatalf("%v", err)
			}
		}
		f, err := os.Create(filepath.Join(sub, fmt.Sprintf("f%05d", i)))
		if err != nil {
			e.r.Fatalf("%v", err)
		}
		for left := per; left > 0; left -= int64(len(block)) {
			if _, err := f.Write(block[:min(left, int64(len(block)))]); err != nil {
				e.r.Fatalf("%v", err)
			}
		}
		f.Close()
	}
}

// fsyncWriter appends 4 KiB and fdatasyncs in a loop, keeping how long each
// took: how long a writer of the volume was blocked.
type fsyncWriter struct {
	mu   sync.Mutex
	lat  samples
	stop chan struct{}
	done chan struct{}
}

func startFsyncWriter(path string) (*fsyncWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	w := &fsyncWriter{stop: make(chan struct{}), done: make(chan struct{})}
	buf := make([]byte, 4096)
	go func() {
		defer close(w.done)
		defer f.Close()
		for n := 0; ; n++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if n%1000 == 999 {
				_ = f.Truncate(0) // stay small
			}
			start := time.Now()
			if _, err := f.Write(buf); err != nil {
				return
			}
			_ = unix.Fdatasync(int(f.Fd()))
			d := time.Since(start)
			w.mu.Lock()
			w.lat = append(w.lat, d)
			w.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	return w, nil
}

func (w *fsyncWriter) finish() samples {
	close(w.stop)
	<-w.done
	return w.lat
}

// p99 is the 99th percentile of s.
func (s samples) p99() time.Duration {
	v := s.sorted()
	if len(v) == 0 {
		return 0
	}
	return v[min(len(v)-1, len(v)*99/100)]
}

// snapshot: on each host file system, a sized volume holding -snap-bytes in
// -snap-files files, written to by a writer that fsyncs, gets -snap-reps
// snapshots and clones; a plain directory with the same tree on the same
// file system is copied with cp -a --reflink=always where that works and
// cp -a where not.
func (e *benchEnv) snapshot() *section {
	type host struct{ name, dir string }
	hosts := []host{{"host file system", e.r.tempDir("snap-host")}}
	if _, err := exec.LookPath("mkfs.xfs"); err == nil {
		xfsSize := max(4*e.o.snapBytes+(1<<30), 2<<30)
		hosts = append(hosts, host{"xfs, reflink=1 (loop)", harness.LoopXFS(e.r, e.r.tempDir("snap-xfs"), xfsSize)})
	} else {
		logf("  no mkfs.xfs: the host file system only")
	}
	var rows [][]string
	var sums []summary
	for _, h := range hosts {
		rs, sum := e.snapshotOn(h.name, h.dir)
		rows = append(rows, rs...)
		sums = append(sums, sum)
	}
	return &section{
		id:    "snapshot",
		title: "Snapshots and clones of a sized volume in use",
		method: fmt.Sprintf("A sized volume (image backend) holds %s in %d files while a writer appends 4 KiB and fdatasyncs every millisecond. "+
			"Each rep times `volume snapshot create` (freeze, clone of disk.img, thaw) and `volume clone SRC@SNAP` through the store, "+
			"and cp -a of the same tree as a plain directory on the same file system (with --reflink=always where the file system takes it). "+
			"Freeze is how long the file system was frozen; the writer's p99 and max are its fdatasync latencies over the whole run. %d reps.",
			volumes.FormatBytes(e.o.snapBytes), e.o.snapFiles, e.o.snapReps),
		header: []string{"file system", "operation", "n", "median", "p90", "how"},
		rows:   rows,
		sums:   sums,
	}
}

func (e *benchEnv) snapshotOn(hostName, dir string) ([][]string, summary) {
	root := filepath.Join(dir, "store")
	if err := os.MkdirAll(root, 0o755); err != nil {
		e.r.Fatalf("%v", err)
	}
	s, err := volumes.Open(root, volumes.WithSizePolicy(volumes.SizePolicy{Backend: volumes.BackendImage}))
	if err != nil {
		e.r.Fatalf("%v", err)
	}
	e.r.Cleanup(func() { s.Close(); unmountUnder(root) })
	size := 2*e.o.snapBytes + (256 << 20)
	if _, err := s.Create("default", "db", volumes.CreateOptions{Size: size}); err != nil {
		e.r.Fatalf("%v", err)
	}
	vols, _, err := s.Acquire("bench-writer", []volumes.Request{{Namespace: "default", Name: "db"}}, nil)
	if err != nil {
		e.r.Fatalf("%v", err)
	}
	logf("  %s: filling the volume and a plain copy", hostName)
	e.fillTree(filepath.Join(vols[0].Mountpoint, "tree"), e.o.snapBytes, e.o.snapFiles)
	plain := filepath.Join(dir, "plain")
	e.fillTree(plain, e.o.snapBytes, e.o.snapFiles)
	unix.Sync()
	w, err := startFsyncWriter(filepath.Join(vols[0].Mountpoint, "wlog"))
	if err != nil {
		e.r.Fatalf("%v", err)
	}
	var snaps, clones, frozen, cps samples
	snapHow, cloneHow, cpHow := "", "", "cp -a --reflink=always"
	for i := 0; i < e.o.snapReps; i++ {
		snap := fmt.Sprintf("s%d", i)
		start := time.Now()
		sn, err := s.Snapshots().Create("default", "db", snap, volumes.SnapshotOptions{})
		if err != nil {
			e.r.Fatalf("%s: snapshot: %v", hostName, err)
		}
		snaps, frozen, snapHow = append(snaps, time.Since(start)), append(frozen, sn.Frozen), string(sn.Copy)
		start = time.Now()
		res, err := s.Clone("default", "db", snap, "c"+snap, volumes.CloneOptions{})
		if err != nil {
			e.r.Fatalf("%s: clone: %v", hostName, err)
		}
		clones, cloneHow = append(clones, time.Since(start)), string(res.Copy)
		if err := s.Remove("default", "c"+snap); err != nil {
			e.r.Fatalf("%v", err)
		}
		if err := s.Snapshots().Remove("default", "db", snap); err != nil {
			e.r.Fatalf("%v", err)
		}
		dst := filepath.Join(dir, "cp")
		start = time.Now()
		err = exec.Command("cp", "-a", "--reflink=always", plain, dst).Run()
		if err != nil {
			os.RemoveAll(dst)
			cpHow = "cp -a (no reflinks)"
			start = time.Now()
			if out, err := exec.Command("cp", "-a", plain, dst).CombinedOutput(); err != nil {
				e.r.Fatalf("cp -a: %v: %s", err, out)
			}
		}
		cps = append(cps, time.Since(start))
		os.RemoveAll(dst)
	}
	lat := w.finish()
	if err := s.Release("bench-writer"); err != nil {
		e.r.Fatalf("%v", err)
	}
	row := func(op string, v samples, how string) []string {
		return []string{hostName, op, fmt.Sprint(len(v)), ms(v.median()), ms(v.p90()), how}
	}
	rows := [][]string{
		row("snapshot create", snaps, snapHow),
		row("clone of a snapshot", clones, cloneHow),
		row("freeze (writers blocked)", frozen, fmt.Sprintf("max %s", ms(frozen.sorted()[len(frozen)-1]))),
		row("plain tree copy", cps, cpHow),
		{hostName, "writer fdatasync", fmt.Sprint(len(lat)), ms(lat.median()), ms(lat.p90()), fmt.Sprintf("p99 %s, max %s", ms(lat.p99()), ms(lat.sorted()[len(lat)-1]))},
	}
	p99 := frozen.p99()
	goal, met := "p99 < 50 ms (image backend with reflinks)", verdict(p99 < 50*time.Millisecond)
	if snapHow != "reflink" {
		// The issue sets no bound without reflinks: the freeze lasts
		// for a copy of the image's data.
		goal, met = "none without reflinks", "-"
	}
	return rows, summary{"longest freeze (p99), " + hostName, ms(p99), ms(cps.median()) + " (" + cpHow + ", snapshot create against it)",
		fmt.Sprintf("%.3fx", ratio(snaps.median(), cps.median())), goal, met}
}

// cloneOfStart: create+start of a container whose anonymous volume is a
// cloneOf of a snapshot of a volume holding -snap-bytes in -snap-files
// files, against one with a new empty sized volume of the same size, the
// store on an xfs with reflinks.
func (e *benchEnv) cloneOfStart() *section {
	const (
		empty = "nri-volumes, new empty sized volume"
		clone = "nri-volumes, cloneOf golden@g (reflink)"
	)
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		e.r.Fatalf("cloneof needs mkfs.xfs (xfsprogs)")
	}
	size := 2*e.o.snapBytes + (256 << 20)
	xfsSize := max(int64(e.o.n+4)*(64<<20)+4*size, 4<<30)
	stores := map[string]string{}
	var vs []*variant
	for _, name := range []string{empty, clone} {
		mnt := harness.LoopXFS(e.r, e.r.tempDir("cloneof-xfs"), xfsSize)
		stores[name] = filepath.Join(mnt, "store")
		vs = append(vs, e.newVariant(name, harness.ContainerdOptions{}, nriVolumes,
			harness.PluginConfig{Root: stores[name], Extra: "sizes: {backend: image}\n"}, appImage))
		root := stores[name]
		e.r.Cleanup(func() { unmountUnder(root) })
	}
	golden := func(root string) {
		s, err := volumes.Open(root)
		if err != nil {
			e.r.Fatalf("%v", err)
		}
		defer s.Close()
		if _, err := s.Create("default", "golden", volumes.CreateOptions{Size: size}); err != nil {
			e.r.Fatalf("%v", err)
		}
		vols, _, err := s.Acquire("filler", []volumes.Request{{Namespace: "default", Name: "golden"}}, nil)
		if err != nil {
			e.r.Fatalf("%v", err)
		}
		e.fillTree(filepath.Join(vols[0].Mountpoint, "tree"), e.o.snapBytes, e.o.snapFiles)
		if _, err := s.Snapshots().Create("default", "golden", "g", volumes.SnapshotOptions{}); err != nil {
			e.r.Fatalf("%v", err)
		}
		if err := s.Release("filler"); err != nil {
			e.r.Fatalf("%v", err)
		}
	}
	logf("  filling the golden volume")
	golden(stores[clone])
	pods := map[string]*pod{}
	for _, v := range vs {
		pods[v.name] = e.mustPod(v, "cloneof", nil)
	}
	ann := func(v *variant) map[string]string {
		if v.name == clone {
			return map[string]string{podKey: "- {target: /data, cloneOf: golden@g}"}
		}
		return map[string]string{podKey: fmt.Sprintf("- {target: /data, size: %dMi}", size>>20)}
	}
	res := e.interleave(vs, e.o.n,
		func(v *variant, _ int) {
			e.createStart(v, pods[v.name], "warm", appImage.Name, ann(v), func(id string) {
				if v.name == clone && e.exec(v, id, "ls", "/data/tree/d000/f00000") == "" {
					e.r.Fatalf("%s: the clone lacks the golden data", v.name)
				}
			})
		},
		func(v *variant, i int) time.Duration {
			return e.createStart(v, pods[v.name], fmt.Sprintf("c%d", i), appImage.Name, ann(v), nil)
		})
	r := ratio(res[clone].median(), res[empty].median())
	return &section{
		id:    "cloneof",
		title: "Container create+start with a cloneOf volume",
		method: fmt.Sprintf("Each sample is `crictl create` + `crictl start` of a container whose anonymous volume is either a cloneOf of a snapshot of a "+
			"sized volume holding %s in %d files (a reflink of its image, inside CreateContainer) or a new empty sized volume of the same size "+
			"(from the images formatted ahead); each store on an xfs with reflink=1 of its own. %d samples per variant, round-robin.",
			volumes.FormatBytes(e.o.snapBytes), e.o.snapFiles, e.o.n),
		header: resultHeader,
		rows:   resultRows([]string{empty, clone}, res, empty),
		sums: []summary{
			{"create+start with cloneOf (xfs, image backend)", ms(res[clone].median()), ms(res[empty].median()) + " (new empty volume)",
				fmt.Sprintf("%.3fx", r), "<= 1.10x", verdict(r <= 1.10)},
		},
	}
}
