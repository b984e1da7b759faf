package volumes

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// deepChildEnv makes the test binary a child that, under a descriptor limit
// lower than the depth of the tree in volume default/deep, measures, exports
// and removes that volume.
const deepChildEnv = "NRI_VOLUMES_DEEP_CHILD_ROOT"

const (
	deepLevels     = 200
	deepChildLimit = 64
)

// buildDeepTree nests deepLevels directories below dir, each with a file,
// one descriptor at a time.
func buildDeepTree(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() { unix.Close(fd) }()
	for range deepLevels {
		f, err := unix.Openat(fd, "file", unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		unix.Write(f, []byte("data"))
		unix.Close(f)
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			return err
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		unix.Close(fd)
		fd = next
	}
	return nil
}

func deepChild(root string) int {
	lim := unix.Rlimit{Cur: deepChildLimit, Max: deepChildLimit}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := Open(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	code := 0
	vols, err := s.List(ListOptions{Namespace: "default", Size: true})
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "volume ls -s:", err)
		code = 1
	case len(vols) != 2 || vols[0].Name != "deep" || *vols[0].Size < deepLevels*4096:
		fmt.Fprintf(os.Stderr, "volume ls -s: %d volumes, want deep with at least %d bytes\n", len(vols), deepLevels*4096)
		code = 1
	}
	// Every directory and file, and _data itself, is in the archive.
	var tarball bytes.Buffer
	if stats, err := s.Export("default", "deep", &tarball); err != nil || stats.Entries != 2*deepLevels+1 {
		fmt.Fprintf(os.Stderr, "volume export: %d entries, %v; want %d entries\n", stats.Entries, err, 2*deepLevels+1)
		code = 1
	} else if !bytes.Contains(tarball.Bytes(), []byte(strings.Repeat("d/", deepLevels-1)+"file")) {
		fmt.Fprintln(os.Stderr, "volume export: the deepest file is not in the archive")
		code = 1
	}
	if err := s.Remove("default", "deep"); err != nil {
		fmt.Fprintln(os.Stderr, "volume rm:", err)
		code = 1
	}
	// A copy-up that made a deep tree and then failed is cleaned up whole.
	boom := errors.New("boom")
	err = s.CopyUps().Copy("default", "deepcopy", func(dir string) error {
		if err := buildDeepTree(dir); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || strings.Contains(err.Error(), "removing") {
		fmt.Fprintln(os.Stderr, "failed copy-up of a deep tree:", err)
		code = 1
	}
	return code
}

// TestDeepTreeUnderLowDescriptorLimit: a container may nest directories
// deeper than the plugin's RLIMIT_NOFILE. Measuring, exporting and removing
// such a volume still works, and no .tmp-rm-* entry stays behind.
func TestDeepTreeUnderLowDescriptorLimit(t *testing.T) {
	s, root := newStore(t)
	v, err := s.Create("default", "deep", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := buildDeepTree(v.Mountpoint); err != nil {
		t.Fatal(err)
	}
	copyVol, err := s.Create("default", "deepcopy", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), deepChildEnv+"="+root)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("child under RLIMIT_NOFILE=%d: %v\n%s", deepChildLimit, err, out)
	}
	entries, err := os.ReadDir(filepath.Join(root, "volumes", "default"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) || e.Name() == "deep" {
			t.Errorf("%s is still in the store", e.Name())
		}
	}
	for _, dir := range []string{copyVol.Mountpoint, filepath.Dir(copyVol.Mountpoint)} {
		for _, e := range dataNames(t, dir) {
			if e != "_data" && e != metaFile {
				t.Errorf("the failed copy-up left %s in %s", e, dir)
			}
		}
	}
}
