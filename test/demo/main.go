// Command demo tells the nri-volumes story against a real containerd: it
// starts its own containerd and plugin in temporary directories, runs pods
// with crictl, prints each step with the real output, and cleans up. It
// exits non-zero when a step fails. It needs root; run it with `make demo`.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

func main() {
	r := &runner{}
	defer r.close()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (it runs containerd)")
		os.Exit(1)
	}
	story(r)
	r.close()
	fmt.Println("\nThe demo ran to the end.")
}

// runner implements harness.TB for a program: Fatalf prints, cleans up and
// exits 1.
type runner struct {
	cleanups []func()
	failed   bool
	closing  bool
}

func (r *runner) Helper()                     {}
func (r *runner) Logf(f string, args ...any)  { fmt.Printf("    "+f+"\n", args...) }
func (r *runner) Cleanup(f func())            { r.cleanups = append(r.cleanups, f) }
func (r *runner) Failed() bool                { return r.failed }
func (r *runner) Skipf(f string, args ...any) { r.Fatalf(f, args...) }
func (r *runner) Fatalf(f string, args ...any) {
	r.fail(fmt.Sprintf(f, args...))
	r.close()
	os.Exit(1)
}

func (r *runner) fail(msg string) {
	r.failed = true
	fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %s\n", msg)
}

func (r *runner) close() {
	if r.closing {
		return
	}
	r.closing = true
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

// check fails the demo unless ok.
func (r *runner) check(ok bool, format string, args ...any) {
	if !ok {
		r.Fatalf(format, args...)
	}
	fmt.Printf("    ok: "+format+"\n", args...)
}

func step(n int, title string) {
	fmt.Printf("\n=== %d. %s\n", n, title)
}

// show prints a command line and its output.
func show(cmdline, out string) {
	fmt.Printf("$ %s\n", cmdline)
	if out = strings.TrimRight(out, "\n"); out != "" {
		fmt.Println(indent(out))
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// demo is the state the story steps share.
type demo struct {
	r      *runner
	ctd    *harness.Containerd
	plugin *harness.Plugin
	cr     *harness.Crictl
	bind   string
	reg    *harness.Registry
}

// volume runs an nri-volumes volume subcommand, shows it and its output.
func (d *demo) volume(sub string, args ...string) string {
	res := d.plugin.Volume(sub, args...)
	show(strings.Join(append([]string{"nri-volumes", "volume", sub}, args...), " "), res.Stdout+res.Stderr)
	if res.Err != nil {
		d.r.Fatalf("%v", res.Err)
	}
	return res.Stdout
}

// exec runs a shell script in a container, shows it and its output.
func (d *demo) exec(id, script string) string {
	out := d.cr.Sh(id, script)
	show(fmt.Sprintf("crictl exec %s sh -c %q", id[:12], script), out)
	return out
}

// host runs a command on the host, shows it and its output.
func (d *demo) host(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	show(strings.Join(append([]string{name}, args...), " "), string(out))
	if err != nil {
		d.r.Fatalf("%s: %v", name, err)
	}
	return string(out)
}

func (d *demo) runPod(name, uid string, annotations map[string]string) *harness.Pod {
	pod := d.cr.RunPod(name, "default", uid, annotations)
	var ann []string
	for k, v := range annotations {
		ann = append(ann, fmt.Sprintf("%s: %q", k, v))
	}
	show(fmt.Sprintf("crictl runp %s.json   # namespace default, annotations {%s}", name, strings.Join(ann, ", ")), pod.ID[:12])
	return pod
}

func (d *demo) runContainer(pod *harness.Pod, spec harness.ContainerSpec) string {
	id, err := d.cr.CreateContainerSpec(pod, spec)
	if err != nil {
		d.r.Fatalf("create container %s: %v", spec.Name, err)
	}
	d.cr.Start(id)
	show(fmt.Sprintf("crictl run %s   # image %s, attempt %d", spec.Name, spec.Image, spec.Attempt), id[:12])
	return id
}

func (d *demo) rmPod(pod *harness.Pod) {
	d.cr.RmPod(pod)
	show("crictl rmp -f "+pod.ID[:12], "")
}

func story(r *runner) {
	step(1, "Start a private containerd (pinned in hack/versions.env) and the nri-volumes plugin")
	bins := harness.BaseBinaries(r)
	ctd := harness.StartContainerd(r, bins, harness.ContainerdOptions{})
	bindDir, err := os.MkdirTemp("", "nrivol-demo-host-")
	if err != nil {
		r.Fatalf("%v", err)
	}
	r.Cleanup(func() { os.RemoveAll(bindDir) })
	reg := harness.StartRegistry(r)
	plugin := harness.StartPlugin(r, ctd, harness.PluginOptions{Config: harness.PluginConfig{AllowedHostPaths: []string{bindDir}, Extra: registriesConfig(reg)}})
	d := &demo{r: r, ctd: ctd, plugin: plugin, cr: ctd.Crictl(r), bind: bindDir, reg: reg}
	cfg := harness.PluginConfig{Root: plugin.Root, AllowedHostPaths: []string{bindDir}, Extra: registriesConfig(reg)}.YAML()
	fmt.Printf("containerd: %s\nplugin: nri-volumes run --config %s, which holds:\n%s\n", ctd.Address, plugin.ConfigPath, indent(strings.TrimRight(cfg, "\n")))
	importImages(d)

	namedVolume(d)
	anonymousVolume(d)
	tmpfs(d)
	bindMount(d)
	anotherNode(d)

	step(10, "All volumes the plugin keeps")
	out := d.volume("ls")
	r.check(strings.Contains(out, "VOLUME NAME") && strings.Contains(out, "DIRECTORY"), "volume ls has the VOLUME NAME and DIRECTORY columns")
}

func importImages(d *demo) {
	loop := `i=0; while true; do i=$((i+1)); echo "SET counter $i" >> /data/appendonly.aof; sleep 1; done`
	for _, img := range []harness.Image{
		{Name: "localhost/redis-like:demo", Entrypoint: []string{"/bin/sh", "-c", loop}},
		{
			Name: "localhost/postgres-like:demo", Entrypoint: []string{"/bin/sleep", "2147483647"},
			Volumes: []string{"/var/lib/postgresql/data"},
			Files: []harness.File{
				harness.Directory("/var/lib/postgresql/data", 0o750, 999, 999),
				harness.RegularFile("/var/lib/postgresql/data/PG_VERSION", "16\n", 0o600, 999, 999),
			},
		},
		{
			Name: "localhost/web:demo", Entrypoint: []string{"/bin/sleep", "2147483647"},
			Files: []harness.File{harness.RegularFile("/etc/app/app.conf", "listen=80   # the image's default\n", 0o644, 0, 0)},
		},
	} {
		d.ctd.Import(d.r, img)
		fmt.Printf("imported %s (busybox-based, built by test/harness)\n", img.Name)
	}
}

func namedVolume(d *demo) {
	r := d.r
	step(2, "Create a named volume, like `nerdctl volume create redis-data`")
	d.volume("create", "redis-data")

	step(3, "Run a redis-like pod that mounts it at /data")
	ann := map[string]string{"volumes.noderesource.dev/pod": "- redis-data:/data"}
	pod := d.runPod("redis", "redis-1", ann)
	id := d.runContainer(pod, harness.ContainerSpec{Name: "redis", Image: "localhost/redis-like:demo"})
	time.Sleep(2 * time.Second)
	d.exec(id, "echo 'snapshot 1' > /data/dump.rdb; ls -l /data; tail -n 2 /data/appendonly.aof")
	res := d.plugin.Volume("rm", "redis-data")
	show("nri-volumes volume rm redis-data", res.Stdout+res.Stderr)
	r.check(res.Err != nil, "volume rm refuses a volume in use")

	step(4, "Delete the pod: the data stays on the host")
	d.rmPod(pod)
	dir := d.plugin.VolumeDir("default", "redis-data")
	d.host("ls", "-l", dir)
	data, err := os.ReadFile(filepath.Join(dir, "dump.rdb"))
	r.check(err == nil && string(data) == "snapshot 1\n", "%s holds dump.rdb", dir)

	step(5, "The next pod sees the same data")
	pod2 := d.runPod("redis", "redis-2", ann)
	id2 := d.runContainer(pod2, harness.ContainerSpec{Name: "redis", Image: "localhost/redis-like:demo"})
	out := d.exec(id2, "cat /data/dump.rdb; wc -l < /data/appendonly.aof")
	r.check(strings.HasPrefix(out, "snapshot 1\n"), "the second pod reads the first pod's dump.rdb")
	d.rmPod(pod2)
}

func anonymousVolume(d *demo) {
	r := d.r
	step(6, "An image with VOLUME /var/lib/postgresql/data gets an anonymous volume")
	pod := d.runPod("postgres", "postgres-1", nil)
	spec := harness.ContainerSpec{Name: "postgres", Image: "localhost/postgres-like:demo"}
	id := d.runContainer(pod, spec)
	out := d.exec(id, "stat -c '%n owner=%u:%g mode=%a' /var/lib/postgresql/data /var/lib/postgresql/data/PG_VERSION")
	r.check(strings.Contains(out, "data owner=999:999 mode=750"), "the volume took the image's content, owner and mode")
	d.exec(id, "echo 'row 1' > /var/lib/postgresql/data/table")

	anon := strings.Fields(d.volume("ls", "--filter", "anonymous=true", "-q"))
	r.check(len(anon) == 1, "one anonymous volume, named by 64 hex characters")
	d.host("ls", "-ln", d.plugin.VolumeDir("default", anon[0]))

	fmt.Println("-- the container restarts in the same pod (stop, remove, create attempt 1):")
	d.cr.Stop(id)
	show("crictl stop "+id[:12], "")
	d.cr.Rm(id)
	show("crictl rm "+id[:12], "")
	spec.Attempt = 1
	id = d.runContainer(pod, spec)
	out = d.exec(id, "cat /var/lib/postgresql/data/table")
	r.check(out == "row 1\n", "the data survived the restart")

	fmt.Println("-- the pod goes away, and its anonymous volume with it:")
	d.rmPod(pod)
	time.Sleep(500 * time.Millisecond)
	out = d.volume("ls", "--filter", "anonymous=true", "-q")
	r.check(strings.TrimSpace(out) == "", "no anonymous volume is left")
}

func tmpfs(d *demo) {
	r := d.r
	step(7, "A tmpfs mount has a size")
	pod := d.runPod("secrets", "secrets-1", map[string]string{
		"volumes.noderesource.dev/pod": "- {type: tmpfs, target: /run/secrets, size: 16Mi}",
	})
	id := d.runContainer(pod, harness.ContainerSpec{Name: "app", Image: "localhost/web:demo"})
	out := d.exec(id, "df -k /run/secrets; grep /run/secrets /proc/mounts")
	r.check(strings.Contains(out, "size=16384k"), "/run/secrets is a 16 MiB tmpfs")
	d.rmPod(pod)
}

func bindMount(d *demo) {
	r := d.r
	step(8, "A bind mount of an allowed host path hides what the image had")
	conf := filepath.Join(d.bind, "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		r.Fatalf("%v", err)
	}
	if err := os.WriteFile(filepath.Join(conf, "app.conf"), []byte("listen=8080   # from the host\n"), 0o644); err != nil {
		r.Fatalf("%v", err)
	}
	d.host("cat", filepath.Join(conf, "app.conf"))
	fmt.Println("-- the annotation is scoped to the container named web; the pod's other container keeps the image's file:")
	pod := d.runPod("web", "web-1", map[string]string{"volumes.noderesource.dev/container.web": "- " + conf + ":/etc/app:ro"})
	plain := d.runContainer(pod, harness.ContainerSpec{Name: "plain", Image: "localhost/web:demo"})
	out := d.exec(plain, "cat /etc/app/app.conf")
	r.check(strings.Contains(out, "the image's default"), "without the bind mount the image's file is there")
	id := d.runContainer(pod, harness.ContainerSpec{Name: "web", Image: "localhost/web:demo"})
	out = d.exec(id, "cat /etc/app/app.conf")
	r.check(strings.Contains(out, "from the host"), "with it the container sees the host's file, not the image's")

	fmt.Println("-- a host path outside bindMounts.allowedHostPaths is refused:")
	denied := d.cr.RunPod("web-denied", "default", "web-2", map[string]string{"volumes.noderesource.dev/pod": "- /etc:/host-etc"})
	_, err := d.cr.CreateContainer(denied, "web", "localhost/web:demo", nil, nil)
	msg := ""
	if err != nil {
		msg = err.Error()
		// crictl wraps the plugin's message in the gRPC errors of each layer.
		if i := strings.LastIndex(msg, "desc = "); i >= 0 {
			msg = msg[i+len("desc = "):]
		}
		msg = strings.TrimSuffix(strings.ReplaceAll(msg, `\"`, `"`), `"`)
	}
	show("crictl create ... # annotation - /etc:/host-etc", msg)
	r.check(err != nil, "the container was not created")
	d.rmPod(denied)
	d.rmPod(pod)
}
