package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"sigs.k8s.io/yaml"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/test/harness"
)

// k8sObject is the part of a Kubernetes manifest that the DaemonSet test
// reads: a ConfigMap's data, or a DaemonSet's pod template.
type k8sObject struct {
	Kind     string
	Metadata struct {
		Name, Namespace string
	}
	Data map[string]string
	Spec struct {
		Template struct {
			Metadata struct {
				Annotations map[string]string
			}
			Spec struct {
				InitContainers, Containers []k8sContainer
				Volumes                    []k8sVolume
			}
		}
	}
}

type k8sContainer struct {
	Name, Image     string
	Command, Args   []string
	SecurityContext struct{ Privileged bool }
	VolumeMounts    []struct {
		Name, MountPath  string
		ReadOnly         bool
		MountPropagation string
	}
	Ports []struct {
		Name          string
		ContainerPort int
	}
	LivenessProbe *struct {
		HTTPGet *struct {
			Path string
			Port any // a number or the name of a port
		}
	}
}

// livenessURL is where the kubelet would probe c on a host-network pod.
func (c k8sContainer) livenessURL(t *testing.T) string {
	t.Helper()
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil {
		return ""
	}
	get := c.LivenessProbe.HTTPGet
	port := fmt.Sprint(get.Port)
	for _, p := range c.Ports {
		if p.Name == port {
			port = strconv.Itoa(p.ContainerPort)
		}
	}
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatalf("container %s: liveness probe port %q is neither a number nor a named port", c.Name, port)
	}
	return "http://127.0.0.1:" + port + get.Path
}

type k8sVolume struct {
	Name     string
	HostPath *struct{ Path, Type string }
	// ConfigMap volumes are written to a host directory by the test.
	ConfigMap *struct{ Name string }
}

// readManifests parses the documents of a multi-document YAML file.
func readManifests(t *testing.T, path string) []k8sObject {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []k8sObject
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var o k8sObject
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		objs = append(objs, o)
	}
	return objs
}

// pathMap moves the node's paths of a manifest to the test's directories.
type pathMap map[string]string

// apply maps p when it is, or is below, one of the node's paths.
func (m pathMap) apply(p string) string {
	q, _ := m.lookup(p)
	return q
}

// lookup is apply that also says whether p is one of the node's paths.
func (m pathMap) lookup(p string) (string, bool) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		if p == k || strings.HasPrefix(p, k+"/") {
			return m[k] + strings.TrimPrefix(p, k), true
		}
	}
	return p, false
}

// TestDaemonSet runs the pod of examples/kubernetes/daemonset.yaml through
// crictl against a containerd that requires the plugin, as on a production
// node: the init container installs the hook binary on the host, the plugin
// container connects over the mounted NRI socket directory, and then a
// workload gets a named volume and an image volume copied up by the hook at
// its host path, and a sized volume that the plugin mounts inside its
// container's view of the store (Bidirectional propagation) is enforced in
// the workload. The node's paths become the test's own directories, mounted
// at the same paths inside, as the manifest's host paths are; the host's /dev
// stays /dev.
func TestDaemonSet(t *testing.T) {
	bins := testBins(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var ds, cm *k8sObject
	objs := readManifests(t, filepath.Join(root, "examples", "kubernetes", "daemonset.yaml"))
	for i := range objs {
		switch objs[i].Kind {
		case "DaemonSet":
			ds = &objs[i]
		case "ConfigMap":
			cm = &objs[i]
		}
	}
	if ds == nil || cm == nil {
		t.Fatalf("daemonset.yaml has no DaemonSet or no ConfigMap")
	}

	ctd := harness.StartContainerd(t, bins, harness.ContainerdOptions{NRISocketDir: true, DefaultValidator: exampleValidator(t)})
	node := t.TempDir()
	paths := pathMap{
		"/var/run/nri":         filepath.Dir(ctd.NRISocket),
		"/var/lib/nri-volumes": filepath.Join(node, "store"),
		"/var/lib/containerd":  ctd.Root,
		"/opt/nri-volumes/bin": filepath.Join(node, "hook-bin"),
		"/dev":                 "/dev",
	}
	// Bidirectional propagation needs the store on a shared mount, which a
	// systemd node's / is; here the store is made one.
	sharedStore(t, paths["/var/lib/nri-volumes"])

	static, err := harness.BuildStaticPluginTo(t.TempDir())
	if err != nil {
		t.Fatalf("%v", err)
	}
	// The image holds both binaries, as the Dockerfile makes it.
	binaries := map[string][]byte{}
	var files []harness.File
	for _, name := range []string{"nri-volumes", "nri-volumes-hook"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(static), name))
		if err != nil {
			t.Fatal(err)
		}
		binaries[name] = b
		files = append(files, harness.File{Path: "/usr/local/bin/" + name, Content: string(b), Mode: 0o755})
	}
	pluginImage := ds.Spec.Template.Spec.Containers[0].Image
	// As the Dockerfile's image does, it ships e2fsprogs for sized volumes.
	e2fsprogs, err := harness.HostTools("/usr/sbin/mkfs.ext4", "/usr/sbin/resize2fs")
	if err != nil {
		t.Fatalf("e2fsprogs for the plugin's image: %v", err)
	}
	ctd.Import(t, harness.Image{Name: pluginImage, Entrypoint: []string{"/usr/local/bin/nri-volumes"}, Files: append(e2fsprogs, files...)})

	// The pod's volumes: host paths mapped, the ConfigMap written out with
	// its paths mapped the same way.
	hostPaths := map[string]string{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		switch {
		case v.HostPath != nil:
			p, ok := paths.lookup(v.HostPath.Path)
			if !ok {
				t.Fatalf("hostPath %s of volume %s has no test counterpart; extend the test's path map", p, v.Name)
			}
			switch v.HostPath.Type {
			case "DirectoryOrCreate":
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				if v.Name == "store" {
					sharedMount(t, p)
				}
			case "Directory":
				if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
					t.Fatalf("hostPath %s (type Directory) of volume %s: %v", p, v.Name, err)
				}
			}
			hostPaths[v.Name] = p
		case v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name:
			dir := filepath.Join(node, "configmap-"+v.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for file, content := range cm.Data {
				var doc map[string]any
				if err := yaml.Unmarshal([]byte(content), &doc); err != nil {
					t.Fatalf("ConfigMap %s: %v", file, err)
				}
				for _, key := range []string{"root", "containerdRoot", "hookPath"} {
					if s, ok := doc[key].(string); ok {
						doc[key] = paths.apply(s)
					}
				}
				out, err := yaml.Marshal(doc)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, file), out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			hostPaths[v.Name] = dir
		default:
			t.Fatalf("volume %s of the DaemonSet is neither a hostPath nor the ConfigMap", v.Name)
		}
	}
	// A mount at the host path's own path is the manifest's promise that
	// paths mean the same inside and out, so it moves with the host path.
	containerSpec := func(c k8sContainer) harness.ContainerSpec {
		spec := harness.ContainerSpec{Name: c.Name, Image: c.Image, Command: c.Command, Privileged: c.SecurityContext.Privileged}
		for _, a := range c.Args {
			spec.Args = append(spec.Args, paths.apply(a))
		}
		for _, vm := range c.VolumeMounts {
			host, ok := hostPaths[vm.Name]
			if !ok {
				t.Fatalf("container %s mounts unknown volume %s", c.Name, vm.Name)
			}
			spec.Mounts = append(spec.Mounts, harness.Mount{HostPath: host, ContainerPath: paths.apply(vm.MountPath),
				Readonly: vm.ReadOnly, Propagation: vm.MountPropagation})
		}
		return spec
	}

	cr := ctd.Crictl(t)
	privileged := slices.ContainsFunc(ds.Spec.Template.Spec.Containers, func(c k8sContainer) bool { return c.SecurityContext.Privileged })
	pod, err := cr.TryRunPod(harness.PodSpec{
		Name: ds.Metadata.Name + "-node1", Namespace: ds.Metadata.Namespace, UID: "uid-daemonset",
		Annotations: ds.Spec.Template.Metadata.Annotations, Privileged: privileged,
	})
	if err != nil {
		t.Fatalf("run the DaemonSet's pod: %v", err)
	}
	for _, c := range ds.Spec.Template.Spec.InitContainers {
		id, err := cr.TryRunContainer(pod, containerSpec(c))
		if err != nil {
			t.Fatalf("init container %s: %v", c.Name, err)
		}
		if !eventually(func() bool { return cr.State(id) == "CONTAINER_EXITED" }) {
			t.Fatalf("init container %s did not finish: %s\n%s", c.Name, cr.State(id), cr.Logs(id))
		}
		status, _ := cr.Inspect(id)["status"].(map[string]any)
		if code, _ := status["exitCode"].(float64); code != 0 {
			t.Fatalf("init container %s exited with %v:\n%s", c.Name, code, cr.Logs(id))
		}
	}
	for name, want := range binaries {
		p := filepath.Join(paths["/opt/nri-volumes/bin"], name)
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("the init container did not install %s at %s: %v", name, p, err)
		}
	}
	hookBin := filepath.Join(paths["/opt/nri-volumes/bin"], "nri-volumes-hook")

	synced := ctd.SyncCount("10-volumes")
	var pluginID string
	for _, c := range ds.Spec.Template.Spec.Containers {
		id, err := cr.TryRunContainer(pod, containerSpec(c))
		if err != nil {
			t.Fatalf("container %s: %v", c.Name, err)
		}
		pluginID = id
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("plugin container log:\n%s", cr.Logs(pluginID))
		}
	})
	if !waitForSync(ctd, "10-volumes", synced) {
		t.Fatalf("the plugin in its container did not connect: %s\n%s", cr.State(pluginID), cr.Logs(pluginID))
	}
	probed := false
	for _, c := range ds.Spec.Template.Spec.Containers {
		url := c.livenessURL(t)
		if url == "" {
			continue
		}
		probed = true
		var code int
		if !eventually(func() bool {
			resp, err := http.Get(url)
			if err != nil {
				return false
			}
			resp.Body.Close()
			code = resp.StatusCode
			return code == http.StatusOK
		}) {
			t.Errorf("the liveness probe of %s, GET %s, answers %d, want 200", c.Name, url, code)
		}
	}
	if !probed {
		t.Errorf("the DaemonSet's plugin container has no HTTP liveness probe")
	}

	ctd.Import(t, dbImage)
	wl := cr.RunPod("workload", "default", "uid-workload", map[string]string{
		podKey: "- data:/named\n- {source: sized, target: /sized, size: 8Mi}",
	})
	id := cr.RunContainer(wl, "db", dbImage.Name, nil, nil)
	cr.Sh(id, "echo from the workload > /named/f")
	store := paths["/var/lib/nri-volumes"]
	if got, err := os.ReadFile(filepath.Join(store, "volumes", "default", "data", "_data", "f")); err != nil || string(got) != "from the workload\n" {
		t.Errorf("the named volume on the host holds %q, %v", got, err)
	}
	if got := cr.Exec(id, "cat", "/data/seed.txt"); got != "seeded by the image\n" {
		t.Errorf("the image volume /data/seed.txt = %q, want the image's content copied up", got)
	}
	if got := trim(cr.Exec(id, "stat", "-c", "%u:%g %a", "/data")); got != "999:999 750" {
		t.Errorf("stat /data = %q, want the image directory's 999:999 750", got)
	}
	if src := cr.Mounts(id)["/data"]; !strings.HasPrefix(src, filepath.Join(store, "volumes", "default")+"/") {
		t.Errorf("/data is mounted from %q, not from the store at %s", src, store)
	}
	df := cr.Exec(id, "df", "-k", "/sized")
	if kib, ok := dfTotalKiB(df); !ok || kib < 8<<10 || kib > 9<<10 {
		t.Errorf("df -k /sized in the workload does not show the 8 MiB size:\n%s", df)
	}
	if out, err := cr.ExecErr(id, "sh", "-c", "dd if=/dev/zero of=/sized/big bs=1M count=16"); err == nil || !strings.Contains(err.Error(), "No space left on device") {
		t.Errorf("writing 16 MiB into the 8 MiB volume: %v %s", err, out)
	}
	hookPaths := createRuntimeHooks(cr, id)
	if !slices.Contains(hookPaths, hookBin) {
		t.Errorf("createRuntime hooks %v, want the installed %s", hookPaths, hookBin)
	}

	// A subpath is pinned inside the plugin's container; the pin must reach
	// the host, where runc mounts it, and leave it with the container.
	cr.Sh(id, "mkdir /named/logs && echo from the workload > /named/logs/f")
	reader := cr.RunContainer(wl, "reader", dbImage.Name, map[string]string{podKey: "- {source: data, target: /logs, subpath: logs}"}, nil)
	if got := cr.Exec(reader, "cat", "/logs/f"); got != "from the workload\n" {
		t.Errorf("the subpath /logs/f = %q", got)
	}
	pin := cr.Mounts(reader)["/logs"]
	if !strings.HasPrefix(pin, filepath.Join(store, "pins")+"/") || !hostMountPoint(t, pin) {
		t.Errorf("/logs is mounted from %q, want a pin below %s/pins that is a mount on the host", pin, store)
	}
	cr.Stop(reader)
	cr.Rm(reader)
	if hostMountPoint(t, pin) {
		t.Errorf("the pin %s is still mounted on the host after its container went", pin)
	}
	if _, err := os.Lstat(pin); !os.IsNotExist(err) {
		t.Errorf("the pin %s is still there after its container went: %v", pin, err)
	}
}

// sharedMount makes dir a shared mount of its own, as a host path on a node
// where systemd made / shared: Bidirectional propagation needs that.
func sharedMount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", dir, err)
	}
}

// hostMountPoint reports whether p is a mount point in the test's, the
// host's, mount namespace.
func hostMountPoint(t *testing.T, p string) bool {
	t.Helper()
	points, err := fsx.MountPoints()
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(points, p)
}

// waitForSync waits up to 30s until containerd has synchronized plugin name
// more than after times.
func waitForSync(ctd *harness.Containerd, name string, after int) bool {
	deadline := time.Now().Add(30 * time.Second)
	for ctd.SyncCount(name) <= after {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// sharedStore bind-mounts dir onto itself as a shared mount, undone when the
// test ends.
func sharedStore(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Logf("unmount %s: %v", dir, err)
		}
	})
	if err := syscall.Mount("", dir, "", syscall.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", dir, err)
	}
}
