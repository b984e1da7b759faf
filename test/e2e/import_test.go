package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// TestImportHostileXattrsBoundedMemory runs `nri-volumes volume import` on
// the archive of the second hostile review: a .tar.gz of a few MiB that holds
// 3,000 directories with an extended attribute of almost 1 MiB each, 3 GiB
// once unpacked. The import must end with a clear refusal that names the
// entry, leave the volume empty, and keep the CLI's peak memory small: it
// holds no directory's extended attributes until the end.
func TestImportHostileXattrsBoundedMemory(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	archive := filepath.Join(t.TempDir(), "xattrs.tar.gz")
	writeXattrBomb(t, archive, 3000, 1<<20-64)
	if st, err := os.Stat(archive); err != nil || st.Size() > 32<<20 {
		t.Fatalf("archive: %v, %d bytes", err, st.Size())
	}
	e.volume("create", "target")

	// As `gunzip -c xattrs.tar.gz | nri-volumes volume import target -`.
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.plugin.Bin, "volume", "import", "--root", e.plugin.Root, "target", "-")
	cmd.Stdin = zr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Minute
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The CLI's own peak, VmHWM of its process after exec: ru_maxrss
	// would count the forking test process's peak too, as exec records the
	// high-water mark of the memory it leaves.
	peak, done := int64(0), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if hwm, ok := vmHWM(cmd.Process.Pid); ok && hwm > peak {
				peak = hwm
			} else if !ok {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	err = cmd.Wait()
	<-done
	t.Logf("import: %v; peak RSS %d MiB; stderr %q", err, peak>>20, stderr.String())
	if err == nil || !strings.Contains(stderr.String(), `entry "d0000/": extended attribute user.x`) {
		t.Errorf("import: %v, stderr %q; want a refusal naming the first directory and its extended attribute", err, stderr.String())
	}
	if peak == 0 {
		t.Errorf("no VmHWM read of the CLI")
	}
	if peak > 256<<20 {
		t.Errorf("the CLI's peak RSS was %d MiB, want at most 256 MiB", peak>>20)
	}
	if names, err := os.ReadDir(e.plugin.VolumeDir("default", "target")); err != nil || len(names) != 0 {
		t.Errorf("the volume after the refused import: %v %v", names, err)
	}
}

// writeXattrBomb writes to path a gzip'd tar of n directories, each with a
// PAX extended attribute user.x of size bytes.
func writeXattrBomb(t *testing.T, path string, n, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	value := strings.Repeat("x", size)
	for i := range n {
		hdr := &tar.Header{Name: fmt.Sprintf("d%04d/", i), Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": value}}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestImportHoldsContainersOut: while `volume import` fills a volume, a
// container of a new pod that names it fails to be created, with a message
// that says an import is filling it, so it can neither see half the import
// nor lose what it writes when the import fails and empties the volume; the
// import, cut short, leaves the volume empty, and then a container gets it.
func TestImportHoldsContainersOut(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	e.volume("create", "data")
	cmd := exec.Command(e.plugin.Bin, "volume", "import", "--root", e.plugin.Root, "data", "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(stdin)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	// More than a pipe holds: once written, the import is copying "big".
	if _, err := tw.Write(bytes.Repeat([]byte("d"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	pod := e.cr.RunPod("app", "default", "uid-app", map[string]string{podKey: "- data:/data"})
	early, err := e.cr.CreateContainer(pod, "early", appImage, nil, nil)
	if err == nil {
		e.cr.Start(early)
		e.cr.Sh(early, "echo mine > /data/mine")
	}
	if err == nil || !strings.Contains(err.Error(), "an import is filling it") {
		t.Errorf("create a container during the import: %v, want a refusal saying an import is filling the volume", err)
	}
	stdin.Close()
	if err := cmd.Wait(); err == nil || !strings.Contains(stderr.String(), "truncated") {
		t.Errorf("the cut-short import: %v, stderr %q", err, stderr.String())
	}
	if early != "" {
		if got := trim(e.cr.Sh(early, "cat /data/mine 2>&1; true")); got != "mine" {
			t.Errorf("what the container wrote, after the failed import: %q", got)
		}
		return
	}
	ctr := e.cr.RunContainer(pod, "app", appImage, nil, nil)
	if got := trim(e.cr.Sh(ctr, "ls -A /data")); got != "" {
		t.Errorf("the volume after the cut-short import holds %q", got)
	}
}

// vmHWM is the peak resident set of process pid, in bytes; false once it
// has exited (a zombie has no memory to report).
func vmHWM(pid int) (int64, bool) {
	_, hwm, err := harness.ProcStatus(pid)
	return hwm << 10, err == nil && hwm > 0
}
