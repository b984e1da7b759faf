package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// cli runs `nri-volumes ARGS...` in-process, exactly as given.
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	code := dispatch(args, streams{in: strings.NewReader(""), out: &out, err: &errOut})
	r := cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
	r.stdoutLines = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	return r
}

func TestGlobalFlagsAnywhere(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "-n", "k8s.io", "web")
	mustCLI(t, root, "create", "db")
	for _, args := range [][]string{
		{"-n", "k8s.io", "--root", root, "volume", "ls", "-q"},
		{"--root=" + root, "volume", "-n", "k8s.io", "ls", "-q"},
		{"volume", "--root", root, "ls", "--namespace", "k8s.io", "-q"},
		{"volumes", "list", "-q", "-n", "k8s.io", "--root", root, "--log-level", "debug"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if r := cli(t, args...); r.code != 0 || r.stdout != "web\n" {
				t.Errorf("exit %d, stdout %q, stderr %q; want web", r.code, r.stdout, r.stderr)
			}
		})
	}
	if r := cli(t, "--log-level", "loud", "volume", "--root", root, "ls"); r.code != 2 || !strings.Contains(r.stderr, "--log-level") {
		t.Errorf("bad --log-level: %+v", r)
	}
}

func TestFormats(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "--label", "app=web", "web")
	mustCLI(t, root, "create", "db")
	want := filepath.Join(root, "volumes", "default", "web", "_data")
	if r := mustCLI(t, root, "inspect", "--format", "{{.Mountpoint}}", "web"); r.stdout != want+"\n" {
		t.Errorf("inspect --format {{.Mountpoint}} = %q, want %q", r.stdout, want)
	}
	if r := mustCLI(t, root, "inspect", "-f", "{{.Name}}={{index .Labels \"app\"}}", "web", "db"); r.stdout != "web=web\ndb=\n" {
		t.Errorf("inspect -f with two names = %q", r.stdout)
	}
	if r := runCLI(t, root, "", "inspect", "--format", "{{.Name}}", "web", "gone"); r.code != 1 || r.stdout != "web\n" || !strings.Contains(r.stderr, "not found") {
		t.Errorf("inspect --format with a missing name: %+v", r)
	}
	if r := runCLI(t, root, "", "inspect", "--format", "{{.Nope", "web"); r.code != 1 || !strings.Contains(r.stderr, "--format") {
		t.Errorf("inspect with a bad template: %+v", r)
	}
	r := mustCLI(t, root, "ls", "--format", "{{json .}}")
	if len(r.stdoutLines) != 2 {
		t.Fatalf("ls --format '{{json .}}':\n%s", r.stdout)
	}
	var v struct{ Name, Mountpoint string }
	if err := json.Unmarshal([]byte(r.stdoutLines[1]), &v); err != nil || v.Name != "web" || v.Mountpoint != want {
		t.Errorf("ls --format '{{json .}}' line %q: %v %+v", r.stdoutLines[1], err, v)
	}
}

func TestUsageErrors(t *testing.T) {
	root := t.TempDir()
	for _, tt := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"volume"}, "volume needs a command"},
		{[]string{"volume", "frob"}, `unknown volume command "frob"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"volume", "ls", "extra", "--root", root}, "volume ls takes no arguments"},
		{[]string{"volume", "create", "--root", root}, "volume create takes exactly one NAME"},
		{[]string{"volume", "rm", "--root", root}, "volume rm needs at least one NAME"},
		{[]string{"version", "x"}, "version takes no arguments"},
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh"`},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := cli(t, tt.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tt.stderr) || r.stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and %q", r.code, r.stdout, r.stderr, tt.stderr)
			}
		})
	}
}

// TestHelpEverywhere checks that every command has --help with examples.
func TestHelpEverywhere(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" {
			t.Errorf("%s has no examples", c.CommandPath())
		}
		args := append(strings.Fields(c.CommandPath())[1:], "--help")
		if c.Name() == "hook" {
			args = []string{"help", "hook"}
		}
		r := cli(t, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub)
			}
		}
	}
	walk(newRootCommand(streams{}))
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if r := cli(t, "completion", shell); r.code != 0 || !strings.Contains(r.stdout, "nri-volumes") || len(r.stdout) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", shell, r.code, len(r.stdout), r.stderr)
		}
	}
	root := t.TempDir()
	mustCLI(t, root, "create", "web")
	mustCLI(t, root, "create", "db")
	mustCLI(t, root, "create", "-n", "shop", "cart")
	complete := func(args ...string) []string {
		t.Helper()
		r := cli(t, append([]string{cobra.ShellCompRequestCmd}, args...)...)
		if r.code != 0 {
			t.Fatalf("__complete %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
		// The last line is the directive, ":4".
		return r.stdoutLines[:len(r.stdoutLines)-1]
	}
	if got := complete("volume", "rm", "--root", root, ""); strings.Join(got, " ") != "db web" {
		t.Errorf("completing volume rm: %q", got)
	}
	if got := complete("--root", root, "-n", "shop", "volume", "inspect", ""); strings.Join(got, " ") != "cart" {
		t.Errorf("completing volume inspect in shop: %q", got)
	}
	if got := complete("volume", "ls", "--root", root, "-n", ""); strings.Join(got, " ") != "default shop" {
		t.Errorf("completing -n: %q", got)
	}
	missing := filepath.Join(t.TempDir(), "none")
	if got := complete("volume", "rm", "--root", missing, ""); len(got) != 0 {
		t.Errorf("completing from a missing store: %q", got)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("completion created the store: %v", err)
	}
}
