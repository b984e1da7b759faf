package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// cliResult is what a person running the command sees.
type cliResult struct {
	code        int
	stdout      string
	stderr      string
	stdoutLines []string
}

// runCLI runs `nri-volumes volume ARGS... --root ROOT` in-process.
func runCLI(t *testing.T, root, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	argv := append([]string{"volume"}, args...)
	argv = append(argv, "--root", root)
	code := dispatch(argv, streams{in: strings.NewReader(stdin), out: &out, err: &errOut})
	r := cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
	r.stdoutLines = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	return r
}

func mustCLI(t *testing.T, root string, args ...string) cliResult {
	t.Helper()
	r := runCLI(t, root, "", args...)
	if r.code != 0 {
		t.Fatalf("volume %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

func TestVolumeCreateListInspectRemove(t *testing.T) {
	root := t.TempDir()
	// Flags after the name, --flag value and --flag=value all work.
	if r := mustCLI(t, root, "create", "web", "--label", "app=web", "--label=tier=front"); r.stdout != "web\n" {
		t.Errorf("create printed %q", r.stdout)
	}
	mustCLI(t, root, "create", "db")
	mustCLI(t, root, "create", "-n", "shop", "web")
	if r := runCLI(t, root, "", "create", "web"); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("duplicate create: %+v", r)
	}

	r := mustCLI(t, root, "ls")
	if !strings.HasPrefix(r.stdoutLines[0], "VOLUME NAME") || !strings.Contains(r.stdoutLines[0], "DIRECTORY") || len(r.stdoutLines) != 3 {
		t.Errorf("ls table:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, filepath.Join("default", "web", "_data")) {
		t.Errorf("ls table lacks the mountpoint:\n%s", r.stdout)
	}

	if r := mustCLI(t, root, "ls", "-q"); r.stdout != "db\nweb\n" || r.stderr != "" {
		t.Errorf("ls -q = %q, stderr %q", r.stdout, r.stderr)
	}

	r = mustCLI(t, root, "ls", "--format", "json")
	if len(r.stdoutLines) != 2 || r.stderr != "" {
		t.Fatalf("ls --format json:\n%s", r.stdout)
	}
	for _, line := range r.stdoutLines {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if used, ok := v["UsedBy"].([]any); !ok || len(used) != 0 {
			t.Errorf("UsedBy = %#v, want []", v["UsedBy"])
		}
	}

	if r := mustCLI(t, root, "ls", "--format={{.Name}}:{{index .Labels \"app\"}}"); r.stdout != "db:\nweb:web\n" {
		t.Errorf("ls template = %q", r.stdout)
	}

	r = mustCLI(t, root, "ls", "-A")
	if !strings.HasPrefix(r.stdoutLines[0], "NAMESPACE") || len(r.stdoutLines) != 4 || !strings.HasPrefix(r.stdoutLines[3], "shop") {
		t.Errorf("ls -A:\n%s", r.stdout)
	}

	r = mustCLI(t, root, "inspect", "web", "db", "-s")
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("inspect output %q: %v", r.stdout, err)
	}
	if len(got) != 2 || got[0]["Name"] != "web" || got[0]["Namespace"] != "default" || got[0]["Anonymous"] != false {
		t.Fatalf("inspect = %v", got)
	}
	for _, key := range []string{"Mountpoint", "CreatedAt", "Labels", "UsedBy", "Size"} {
		if _, ok := got[0][key]; !ok {
			t.Errorf("inspect lacks %s: %v", key, got[0])
		}
	}
	if labels := got[0]["Labels"].(map[string]any); labels["tier"] != "front" {
		t.Errorf("labels = %v", labels)
	}
	if r := runCLI(t, root, "", "inspect", "nope"); r.code != 1 || r.stdout != "[]\n" || !strings.Contains(r.stderr, "not found") {
		t.Errorf("inspect missing: %+v", r)
	}

	if r := mustCLI(t, root, "rm", "web", "db"); r.stdout != "web\ndb\n" {
		t.Errorf("rm printed %q", r.stdout)
	}
	if r := mustCLI(t, root, "ls", "-q"); r.stdout != "" {
		t.Errorf("ls -q after rm = %q", r.stdout)
	}
	if r := runCLI(t, root, "", "rm", "web"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("rm missing: %+v", r)
	}
	if r := runCLI(t, root, "", "rm", "-f", "web"); r.code != 0 || r.stderr != "" {
		t.Errorf("rm -f missing: %+v", r)
	}
}

func TestVolumeFilters(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "--label", "app=web", "web")
	mustCLI(t, root, "create", "--label", "app=db", "db")
	mustCLI(t, root, "create", "web-old")
	s, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("ctr1", []volumes.Request{{Namespace: "default", Name: "web"}}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	tests := []struct {
		filters []string
		want    string
	}{
		{[]string{"--filter", "label=app"}, "db\nweb\n"},
		{[]string{"--filter=label=app=web"}, "web\n"},
		{[]string{"-f", "name=web*"}, "web\nweb-old\n"},
		{[]string{"--filter", "name=web"}, "web\n"},
		{[]string{"--filter", "dangling=true"}, "db\nweb-old\n"},
		{[]string{"--filter", "dangling=false"}, "web\n"},
		{[]string{"--filter", "anonymous=true"}, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.filters, " "), func(t *testing.T) {
			r := mustCLI(t, root, append([]string{"ls", "-q"}, tt.filters...)...)
			if r.stdout != tt.want {
				t.Errorf("got %q, want %q", r.stdout, tt.want)
			}
		})
	}
	if r := runCLI(t, root, "", "ls", "--filter", "colour=red"); r.code == 0 || !strings.Contains(r.stderr, "colour") || r.stdout != "" {
		t.Errorf("unknown filter: %+v", r)
	}
}

func TestVolumeRemoveInUse(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "busy")
	mustCLI(t, root, "create", "free")
	s, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Acquire("3f2a9c", []volumes.Request{{Namespace: "default", Name: "busy"}}, nil); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, root, "", "rm", "busy", "free")
	if r.code != 1 || !strings.Contains(r.stderr, "3f2a9c") || !strings.Contains(r.stderr, "in use") {
		t.Errorf("rm in-use: %+v", r)
	}
	if r.stdout != "free\n" {
		t.Errorf("rm did not go on with the other name: stdout %q", r.stdout)
	}
	if _, err := s.Get("default", "busy"); err != nil {
		t.Errorf("in-use volume removed: %v", err)
	}
	if r := runCLI(t, root, "", "prune", "-a", "-f"); r.code != 0 || strings.Contains(r.stdout, "busy") {
		t.Errorf("prune -a touched an in-use volume: %+v", r)
	}
}

func TestVolumeRejectsBadNames(t *testing.T) {
	for _, args := range [][]string{
		{"rm", ".."},
		{"rm", "../../etc"},
		{"rm", "-f", "a/b"},
		{"create", "../../etc"},
		{"create", "a/b"},
		{"inspect", ".."},
		{"ls", "-n", "../x"},
		{"create", "-n", "a/b", "v"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "root")
			r := runCLI(t, root, "", args...)
			if r.code == 0 || !strings.Contains(r.stderr, "invalid") || r.stdout != "" {
				t.Errorf("got %+v", r)
			}
			if _, err := os.Stat(root); !os.IsNotExist(err) {
				t.Errorf("store touched: %v", err)
			}
		})
	}
}

func TestVolumePrune(t *testing.T) {
	root := t.TempDir()
	s, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	owner := &volumes.Owner{PodSandboxID: "pod", Container: "app", Target: "/data"}
	vols, _, err := s.Acquire("c1", []volumes.Request{{Namespace: "default", Owner: owner}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, "f"), bytes.Repeat([]byte("x"), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	anonName := vols[0].Name
	mustCLI(t, root, "create", "named")

	r := runCLI(t, root, "n\n", "prune")
	if r.code != 0 || !strings.Contains(r.stderr, "WARNING!") || !strings.Contains(r.stderr, "[y/N]") || r.stdout != "" {
		t.Errorf("prune answered no: %+v", r)
	}
	if _, err := s.Get("default", anonName); err != nil {
		t.Fatalf("prune without consent removed: %v", err)
	}

	r = runCLI(t, root, "y\n", "prune")
	if r.code != 0 || !strings.Contains(r.stdout, anonName) || strings.Contains(r.stdout, "named") {
		t.Errorf("prune: %+v", r)
	}
	if !strings.Contains(r.stdout, "Total reclaimed space: 8.0KiB") {
		t.Errorf("prune reclaimed line: %q", r.stdout)
	}
	if r := runCLI(t, root, "", "prune", "-f", "-a", "--filter", "name=other"); r.code != 0 || strings.Contains(r.stdout, "named") {
		t.Errorf("prune with a filter: %+v", r)
	}
	r = runCLI(t, root, "", "prune", "--all", "--force")
	if r.code != 0 || !strings.Contains(r.stdout, "named") || r.stderr != "" {
		t.Errorf("prune -a -f: %+v", r)
	}
	if r := mustCLI(t, root, "ls", "-q"); r.stdout != "" {
		t.Errorf("left after prune: %q", r.stdout)
	}
}

func TestVolumeListSize(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "v")
	r := mustCLI(t, root, "inspect", "v")
	var vols []volumes.Volume
	if err := json.Unmarshal([]byte(r.stdout), &vols); err != nil || len(vols) != 1 {
		t.Fatalf("inspect: %v %q", err, r.stdout)
	}
	if vols[0].Size != nil {
		t.Errorf("Size without -s: %v", *vols[0].Size)
	}
	if err := os.WriteFile(filepath.Join(vols[0].Mountpoint, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = mustCLI(t, root, "ls", "--size")
	if !strings.Contains(r.stdoutLines[0], "SIZE") || !strings.HasSuffix(strings.TrimSpace(r.stdoutLines[1]), "KiB") {
		t.Errorf("ls -s:\n%s", r.stdout)
	}
}

func TestFlagParsing(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "-n", "shop", "a")
	mustCLI(t, root, "create", "-n", "shop", "b")
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"inspect", "-f", "{{.Name}}", "a", "--namespace=shop"}, 0, "a\n"},
		{[]string{"ls", "-n", "shop", "--quiet=true"}, 0, "a\nb\n"},
		{[]string{"inspect", "-n", "shop", "--", "-q"}, 1, ""},
		{[]string{"ls", "-n"}, 2, ""},
		{[]string{"ls", "--bogus"}, 2, ""},
		{[]string{"ls", "-q=maybe"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCLI(t, root, "", tt.args...)
			if r.code != tt.code || r.stdout != tt.out {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q", r.code, r.stdout, r.stderr, tt.code, tt.out)
			}
		})
	}
}

func TestVersionAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	s := streams{in: strings.NewReader(""), out: &out, err: &errOut}
	if code := dispatch([]string{"version"}, s); code != 0 || !strings.Contains(out.String(), runtime.Version()) || !strings.Contains(out.String(), "NRI:") {
		t.Errorf("version: %d %q", code, out.String())
	}
	t.Setenv("NRI_PLUGIN_NAME", "")
	t.Setenv("NRI_PLUGIN_SOCKET", "")
	errOut.Reset()
	if code := dispatch(nil, s); code != 2 || !strings.Contains(errOut.String(), "Usage") {
		t.Errorf("no command: %d %q", code, errOut.String())
	}
	if code := dispatch([]string{"frobnicate"}, s); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	out.Reset()
	if code := dispatch([]string{"volume", "ls", "--help"}, s); code != 0 || !strings.Contains(out.String(), "Usage") {
		t.Errorf("volume ls --help: %d %q", code, out.String())
	}
}

// TestVolumeCreateRefusesAnonymousShape checks that `volume create` refuses a
// name of 64 hex characters, the shape of anonymous volumes' names, with a
// message that says so, while rm and inspect still take such names.
func TestVolumeCreateRefusesAnonymousShape(t *testing.T) {
	root := t.TempDir()
	owner := volumes.Owner{PodSandboxID: "pod", Container: "app", Target: "/data"}
	anon := volumes.AnonymousName(owner)
	s, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("ctr", []volumes.Request{{Namespace: "default", Owner: &owner}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Release("ctr"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, name := range []string{anon, strings.Repeat("0", 64), strings.ToUpper(anon)} {
		r := runCLI(t, root, "", "create", name)
		if r.code == 0 || !strings.Contains(r.stderr, "anonymous") || !strings.Contains(r.stderr, name) || r.stdout != "" {
			t.Errorf("create %s: %+v, want a refusal naming the name and anonymous volumes", name, r)
		}
	}
	for _, name := range []string{strings.Repeat("a", 63), strings.Repeat("a", 65), strings.Repeat("g", 64)} {
		mustCLI(t, root, "create", name)
	}
	if r := mustCLI(t, root, "inspect", anon); !strings.Contains(r.stdout, `"Anonymous": true`) {
		t.Errorf("inspect of the anonymous volume: %s", r.stdout)
	}
	mustCLI(t, root, "rm", anon)
}
