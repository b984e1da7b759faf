package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// bigImage has a /data of bigDirs*bigFilesPerDir files: enough that the
// copy-up hook is caught in the middle of its copy.
const (
	bigDirs        = 4
	bigFilesPerDir = 500
)

func bigImage() harness.Image {
	img := harness.Image{Name: "localhost/big:e2e", Entrypoint: []string{"/bin/sleep", "2147483647"}}
	for d := range bigDirs {
		for f := range bigFilesPerDir {
			img.Files = append(img.Files, harness.RegularFile(fmt.Sprintf("/data/%02d/%04d", d, f), "x", 0o644, 0, 0))
		}
	}
	return img
}

// copyUpHookPID finds the copy-up hook that runc runs for the store at root:
// a child of this test's containerd, whose arguments name that store.
func copyUpHookPID(root string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	want := []byte("\x00hook\x00copyup\x00--root\x00" + root + "\x00")
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(cmdline, want) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil {
			return pid
		}
	}
	return 0
}

// TestCopyUpHookKilledMidCopy kills the copy-up hook in the middle of its
// copy into a named volume. The container does not start, the volume shows
// none of the half copy, and the next container, in a new pod, finds the
// image's whole /data there.
func TestCopyUpHookKilledMidCopy(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{IgnoreImageDefinedVolumes: true}, harness.PluginConfig{})
	e.ctd.Import(t, bigImage())
	annotations := map[string]string{podKey: "- big:/data"}
	volDir := filepath.Join(e.plugin.Root, "volumes", "default", "big")
	staging := filepath.Join(volDir, ".nri-volumes-copyup")

	pod := e.cr.RunPod("first", "default", "uid-first", annotations)
	id, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "app", Image: "localhost/big:e2e"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	started := make(chan harness.CmdResult, 1)
	go func() { started <- e.cr.Run("start", id) }()
	// Wait for the hook to have copied something, then kill it.
	var pid int
	deadline := time.Now().Add(time.Minute)
	for pid == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the copy-up hook never got to copy")
		}
		if p := copyUpHookPID(e.plugin.Root); p != 0 {
			// The copy goes to staging; a copy straight into _data counts too.
			inStaging, _ := os.ReadDir(staging)
			inData, _ := os.ReadDir(filepath.Join(volDir, "_data"))
			if len(inStaging)+len(inData) > 0 {
				pid = p
			}
		}
		time.Sleep(time.Millisecond)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the hook (pid %d): %v", pid, err)
	}
	if res := <-started; res.Err == nil {
		t.Fatal("the container started although its copy-up hook was killed")
	}
	if _, err := os.Stat(filepath.Join(volDir, "copyup-done")); err == nil {
		t.Fatal("the hook finished before it was killed: make bigImage bigger")
	}
	if entries, err := os.ReadDir(filepath.Join(volDir, "_data")); err != nil || len(entries) != 0 {
		t.Errorf("after the kill the volume holds %d entries (%v); want none of the half copy", len(entries), err)
	}
	e.cr.RmPod(pod)

	pod = e.cr.RunPod("second", "default", "uid-second", annotations)
	id, err = e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "app", Image: "localhost/big:e2e"})
	if err != nil {
		t.Fatalf("create in the second pod: %v", err)
	}
	e.cr.Start(id)
	if got := trim(e.cr.Sh(id, "find /data -type f | wc -l")); got != strconv.Itoa(bigDirs*bigFilesPerDir) {
		t.Errorf("the second pod finds %s files in /data, want %d", got, bigDirs*bigFilesPerDir)
	}
	if got := trim(e.cr.Sh(id, "ls -A /data | wc -l")); got != strconv.Itoa(bigDirs) {
		t.Errorf("/data holds %s entries, want the image's %d directories", got, bigDirs)
	}
	if _, err := os.Stat(staging); !os.IsNotExist(err) {
		t.Errorf("staging directory left after the copy-up: %v", err)
	}
}

// aliasImage declares three VOLUMEs that are one directory: /data and two
// symlinks to it, over 1 MiB of content.
var aliasImage = harness.Image{
	Name:       "localhost/alias:e2e",
	Entrypoint: []string{"/bin/sleep", "2147483647"},
	Volumes:    []string{"/data", "/alias1", "/alias2"},
	Files: []harness.File{
		harness.RegularFile("/data/blob", strings.Repeat("b", 1<<20), 0o644, 0, 0),
		harness.Symlink("/alias1", "/data"),
		harness.Symlink("/alias2", "data"),
	},
}

// TestCopyUpPodBudget: an image whose VOLUMEs name one directory three times
// gets it copied once, within a per-pod budget of 1.5 MiB; a second
// container of the pod, whose copy-up would take the pod past the budget,
// is refused with a message naming limits.copyUpMaxSizePerPod.
func TestCopyUpPodBudget(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{IgnoreImageDefinedVolumes: true},
		harness.PluginConfig{Extra: "limits: {copyUpMaxSizePerPod: 1536Ki}\n"})
	e.ctd.Import(t, aliasImage)
	pod := e.cr.RunPod("alias", "default", "uid-alias", nil)
	id, err := e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "one", Image: aliasImage.Name})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	e.cr.Start(id)
	for _, p := range []string{"/data/blob", "/alias1/blob", "/alias2/blob"} {
		if got := trim(e.cr.Sh(id, "wc -c < "+p)); got != strconv.Itoa(1<<20) {
			t.Errorf("%s holds %s bytes, want the image's %d", p, got, 1<<20)
		}
	}
	var copies int
	for _, name := range e.anonymousVolumes("default") {
		if _, err := os.Stat(filepath.Join(e.plugin.Root, "volumes", "default", name, "_data", "blob")); err == nil {
			copies++
		}
	}
	if copies != 1 {
		t.Errorf("the image's /data was copied %d times, want once", copies)
	}

	id, err = e.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "two", Image: aliasImage.Name})
	if err != nil {
		t.Fatalf("create the second container: %v", err)
	}
	res := e.cr.Run("start", id)
	if res.Err == nil {
		t.Fatal("a second 1 MiB copy-up in a pod with a 1.5 MiB budget started")
	}
	if !strings.Contains(res.Err.Error(), "limits.copyUpMaxSizePerPod") {
		t.Errorf("the refusal does not name limits.copyUpMaxSizePerPod: %v", res.Err)
	}
}
