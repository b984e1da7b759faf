// Package harness runs a real containerd, the nri-volumes plugin and crictl
// for end-to-end tests and for the demo.
//
// It owns everything it starts: temporary directories, the containerd
// process, its shims and containers, the plugin process and the mounts they
// leave behind. Each is released by a cleanup registered on the TB it was
// started with, in reverse order of creation. Processes are found and ended by
// their PIDs or by the addresses this package gave them, never by name.
//
// The helpers are not safe for concurrent use by several goroutines, except
// Crictl's Try helpers, which never touch the test; tests that use them must
// not call t.Parallel.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// TB is the part of testing.TB the harness needs. *testing.T satisfies it, and
// so does the demo's own runner.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
}

// RequireRoot skips the test when the process is not root: containerd, runc
// and mounts need it. Every other missing piece is a failure, so that CI
// really runs the end-to-end tests.
func RequireRoot(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("end-to-end tests need root (running as uid %d)", os.Geteuid())
	}
}

// RepoRoot returns the directory of this module's go.mod, searched upward
// from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/nri-volumes/nri-volumes\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod of github.com/nri-volumes/nri-volumes not found above the working directory")
		}
		dir = parent
	}
}

// Versions returns the pinned runtime versions from hack/versions.env.
func Versions() (map[string]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(root, "hack", "versions.env"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	versions := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("hack/versions.env: bad line %q", line)
		}
		versions[k] = v
	}
	return versions, sc.Err()
}

// tempDir makes a directory with a short path under the system temp dir.
// Unix socket paths are limited to 108 bytes, so t.TempDir's long names
// will not do. It is removed by a cleanup registered on t.
func tempDir(t TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nrivol-"+prefix+"-")
	if err != nil {
		t.Fatalf("make temp dir: %v", err)
	}
	t.Cleanup(func() {
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// CmdResult is what a finished command left.
type CmdResult struct {
	Stdout, Stderr string
	Err            error
}

// run runs a command with a timeout and returns its output; Err is non-nil
// for a non-zero exit and carries the stderr text.
func run(timeout time.Duration, name string, args ...string) CmdResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := CmdResult{Stdout: stdout.String(), Stderr: stderr.String()}
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, ctx.Err())
	}
	if err != nil {
		res.Err = &CmdError{Args: append([]string{name}, args...), Stderr: res.Stderr, Err: err}
	}
	return res
}

// CmdError is a failed command with its stderr.
type CmdError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *CmdError) Error() string {
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *CmdError) Unwrap() error { return e.Err }

// waitFor polls cond until it is true or the timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
