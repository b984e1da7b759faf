package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// hostOwner returns "UID:GID MODE" of a host path, as stat -c '%u:%g %a'
// prints it in a container.
func hostOwner(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("%v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d %o", st.Uid, st.Gid, fi.Mode().Perm())
}

// TestUserNamespaceSharedVolume shares one named volume between two pods with
// user namespaces of different ranges, as kubelet gives pods with hostUsers:
// false, and a pod without one. The volume holds the ids as each container
// sees them, so every pod reads the others' files with the owners they were
// written with and can write to them.
func TestUserNamespaceSharedVolume(t *testing.T) {
	e := newEnv(t, harness.ContainerdOptions{}, harness.PluginConfig{})
	ann := map[string]string{podKey: "- shared:/shared"}
	pods := []struct {
		name   string
		userns *harness.UserNS
	}{
		{"range-65536", &harness.UserNS{HostID: 65536, Size: 65536}},
		{"range-131072", &harness.UserNS{HostID: 131072, Size: 65536}},
		{"host-users", nil},
	}
	ids := make([]string, len(pods))
	for i, p := range pods {
		pod := e.cr.RunPodSpec(harness.PodSpec{Name: p.name, Namespace: "default", UID: "uid-" + p.name, Annotations: ann, UserNS: p.userns})
		ids[i] = e.cr.RunContainer(pod, "app", appImage, nil, nil)
		if p.userns != nil {
			want := fmt.Sprintf("0 %d %d", p.userns.HostID, p.userns.Size)
			if got := strings.Join(strings.Fields(e.cr.Exec(ids[i], "cat", "/proc/self/uid_map")), " "); got != want {
				t.Fatalf("pod %s runs with uid_map %q, want %q: no user namespace", p.name, got, want)
			}
		}
		e.cr.Sh(ids[i], fmt.Sprintf("echo %[1]s > /shared/%[1]s && echo %[1]s > /shared/%[1]s-1000 && chown 1000:1000 /shared/%[1]s-1000", p.name))
	}

	dataDir := e.plugin.VolumeDir("default", "shared")
	var want []string
	for _, p := range pods {
		for file, owner := range map[string]string{p.name: "0:0", p.name + "-1000": "1000:1000"} {
			if got := hostOwner(t, filepath.Join(dataDir, file)); !strings.HasPrefix(got, owner+" ") {
				t.Errorf("on the host, %s written by pod %s is owned by %s, want %s", file, p.name, got, owner)
			}
		}
		want = append(want, p.name+" 0:0", p.name+"-1000 1000:1000")
	}
	wantList := strings.Join(sortedLines(strings.Join(want, "\n")), "\n")

	for i, p := range pods {
		got := strings.Join(sortedLines(e.cr.Sh(ids[i], "cd /shared && stat -c '%n %u:%g' *")), "\n")
		if got != wantList {
			t.Errorf("pod %s sees the owners\n%s\nwant\n%s", p.name, got, wantList)
		}
		for _, other := range pods {
			if _, err := e.cr.ExecErr(ids[i], "sh", "-c", "echo from-"+p.name+" >> /shared/"+other.name); err != nil {
				t.Errorf("pod %s cannot write to %s, which pod %s made: %v", p.name, other.name, other.name, err)
			}
		}
	}
	for _, p := range pods {
		if got := hostOwner(t, filepath.Join(dataDir, p.name)); !strings.HasPrefix(got, "0:0 ") {
			t.Errorf("after the writes, %s is owned by %s on the host", p.name, got)
		}
	}
}

// TestUserNamespaceImageVolume runs an image with VOLUME /data (owned 999:999,
// mode 750) in a pod with a user namespace, next to a tmpfs and a bind mount:
// the anonymous volume holds the image's ids unshifted on the host and shows
// them inside, and the tmpfs and the bind mount work.
func TestUserNamespaceImageVolume(t *testing.T) {
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "app.conf"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, harness.ContainerdOptions{IgnoreImageDefinedVolumes: true}, harness.PluginConfig{AllowedHostPaths: []string{hostDir}})
	e.ctd.Import(t, dbImage)
	pod := e.cr.RunPodSpec(harness.PodSpec{
		Name: "db-userns", Namespace: "default", UID: "uid-db-userns",
		UserNS: &harness.UserNS{HostID: 65536, Size: 65536},
		Annotations: map[string]string{podKey: "- {type: tmpfs, target: /run/secrets, size: 16Mi}\n" +
			"- " + hostDir + ":/etc/app"},
	})
	id := e.cr.RunContainer(pod, "db", dbImage.Name, nil, nil)

	if got := trim(e.cr.Exec(id, "stat", "-c", "%u:%g %a", "/data", "/data/seed.txt")); got != "999:999 750\n999:999 640" {
		t.Errorf("inside, stat /data /data/seed.txt = %q, want 999:999 750 and 999:999 640", got)
	}
	anon := e.anonymousVolumes("default")
	if len(anon) != 1 {
		t.Fatalf("anonymous volumes in default: %v, want one", anon)
	}
	dataDir := e.plugin.VolumeDir("default", anon[0])
	if got := hostOwner(t, dataDir); got != "999:999 750" {
		t.Errorf("on the host the image volume is %s, want 999:999 750", got)
	}
	if got := hostOwner(t, filepath.Join(dataDir, "seed.txt")); got != "999:999 640" {
		t.Errorf("on the host seed.txt is %s, want 999:999 640", got)
	}
	e.cr.Sh(id, "echo new > /data/new")
	if got := hostOwner(t, filepath.Join(dataDir, "new")); !strings.HasPrefix(got, "0:0 ") {
		t.Errorf("a file the container's root wrote is %s on the host, want 0:0", got)
	}

	e.cr.Sh(id, "echo s3cret > /run/secrets/token")
	if got := e.cr.Exec(id, "cat", "/run/secrets/token"); got != "s3cret\n" {
		t.Errorf("tmpfs /run/secrets/token = %q", got)
	}
	if line := mountLine(t, e.cr.Exec(id, "cat", "/proc/mounts"), "/run/secrets"); !strings.Contains(line, "size=16384k") {
		t.Errorf("/run/secrets mount = %q, want a 16Mi tmpfs", line)
	}
	if got := e.cr.Exec(id, "cat", "/etc/app/app.conf"); got != "from host\n" {
		t.Errorf("bind mount /etc/app/app.conf = %q", got)
	}
	if got := trim(e.cr.Exec(id, "stat", "-c", "%u:%g", "/etc/app/app.conf")); got != "0:0" {
		t.Errorf("the host's root-owned app.conf shows as %s inside, want 0:0", got)
	}
}

// sortedLines splits s into its non-empty lines, sorted.
func sortedLines(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	return lines
}
