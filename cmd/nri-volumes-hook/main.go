// Command nri-volumes-hook is the OCI hook that the nri-volumes plugin adds
// to containers whose volumes need copy-up or a chown (see the plugin's
// hookPath). runc runs it before every such container's process, so it is
// kept small and quick to start: it holds the hook alone, none of the
// plugin's NRI, gRPC, CLI or configuration code. `nri-volumes hook` runs
// the same hook.
package main

import (
	"fmt"
	"os"

	"github.com/nri-volumes/nri-volumes/internal/hook"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Println("usage: nri-volumes-hook " + hook.Usage)
		return
	}
	// The plugin runs hookPath with the arguments of `nri-volumes hook`, so
	// hookPath may name either binary.
	if len(args) > 0 && args[0] == "hook" {
		args = args[1:]
	}
	if err := hook.Run(args, os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "nri-volumes-hook: %v\n", err)
		os.Exit(1)
	}
}
