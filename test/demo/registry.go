package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nri-volumes/nri-volumes/test/harness"
)

// registriesConfig lets the pods of namespace default seed volumes from the
// demo registry's demo/ repositories, with its credentials and CA.
func registriesConfig(reg *harness.Registry) string {
	return harness.RegistriesYAML(reg.AuthFile, reg.CAFile, "default", reg.Host+"/demo/*")
}

// anotherNode moves a volume from another node's store to this one through
// an OCI registry: pushed there, seeded here on first use by a pod's from:.
func anotherNode(d *demo) {
	r := d.r
	step(9, "The data moves to another node through an OCI registry")
	nodeA, err := os.MkdirTemp("", "nrivol-demo-node-a-")
	if err != nil {
		r.Fatalf("%v", err)
	}
	r.Cleanup(func() { os.RemoveAll(nodeA) })
	creds := []string{"--auth-file", d.reg.AuthFile, "--ca-file", d.reg.CAFile}
	onA := func(args ...string) {
		argv := append([]string{"volume"}, append(args, "--root", nodeA)...)
		if args[0] == "push" {
			argv = append(argv, creds...)
		}
		res := d.plugin.CLI(argv...)
		show(strings.Join(append([]string{"nri-volumes", "volume"}, args...), " ")+"   # on node A", res.Stdout+res.Stderr)
		if res.Err != nil {
			r.Fatalf("%v", res.Err)
		}
	}
	onA("create", "pgdata")
	data := filepath.Join(nodeA, "volumes", "default", "pgdata", "_data")
	if err := os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte("16 (written on node A)\n"), 0o600); err != nil {
		r.Fatalf("%v", err)
	}
	ref := d.reg.Host + "/demo/pgdata:monday"
	onA("push", "pgdata", ref)

	fmt.Println("-- on this node the pod names the artifact; pgdata does not exist here, so it is pulled (external: true: never made empty):")
	ann := "- {source: pgdata, target: /var/lib/postgresql/data, external: true, from: \"" + ref + "\"}"
	pod := d.runPod("db-b", "db-b-1", map[string]string{"volumes.noderesource.dev/pod": ann})
	var id string
	for tries := 0; ; tries++ {
		// As kubelet does: the creation fails while the pull goes on.
		id, err = d.cr.CreateContainerSpec(pod, harness.ContainerSpec{Name: "db", Image: "localhost/postgres-like:demo"})
		if err == nil || !strings.Contains(err.Error(), "still pulling") || tries == 300 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		r.Fatalf("create container db: %v", err)
	}
	d.cr.Start(id)
	show("crictl run db   # image localhost/postgres-like:demo", id[:12])
	out := d.exec(id, "cat /var/lib/postgresql/data/PG_VERSION")
	r.check(strings.Contains(out, "written on node A"), "the pod on this node starts with node A's data, not an empty volume")
	d.volume("inspect", "pgdata")
	d.rmPod(pod)
}
