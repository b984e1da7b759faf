package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// HostTools returns image Files that carry the host's programs named by
// absolute path, and the shared libraries each loads (as ldd lists them),
// at the paths the host has them: a way to give a test image tools such as
// mkfs.ext4 without pulling a distribution image. A program that is a
// symlink keeps its link, so it runs under the name it was given.
func HostTools(programs ...string) ([]File, error) {
	seen := map[string]bool{}
	var files []File
	add := func(p string, mode os.FileMode) error {
		if seen[p] {
			return nil
		}
		seen[p] = true
		if target, err := os.Readlink(p); err == nil && !strings.Contains(target, "/") {
			files = append(files, Symlink(p, target))
			p = filepath.Join(filepath.Dir(p), target)
			if seen[p] {
				return nil
			}
			seen[p] = true
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, File{Path: p, Content: string(data), Mode: mode})
		return nil
	}
	for _, prog := range programs {
		if err := add(prog, 0o755); err != nil {
			return nil, err
		}
		out, err := exec.Command("ldd", prog).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", prog, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			var lib string
			switch {
			case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
				lib = f[2]
			case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
				lib = f[0]
			default:
				continue
			}
			// The real file's content at the path the loader looks up.
			resolved, err := filepath.EvalSymlinks(lib)
			if err != nil {
				return nil, err
			}
			data, err := os.ReadFile(resolved)
			if err != nil {
				return nil, err
			}
			if !seen[lib] {
				seen[lib] = true
				files = append(files, File{Path: lib, Content: string(data), Mode: 0o755})
			}
		}
	}
	return files, nil
}
