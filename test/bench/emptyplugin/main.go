// Command emptyplugin is the benchmarks' yardstick NRI plugin: it subscribes
// to CreateContainer and answers with no adjustment, so that a run against it
// measures what any NRI plugin costs containerd (the round trip over the NRI
// socket) and nothing more.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

type empty struct{}

// CreateContainer is the only event subscribed to; it changes nothing.
func (empty) CreateContainer(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	return nil, nil, nil
}

func main() {
	socket := flag.String("socket", "/var/run/nri/nri.sock", "NRI socket")
	name := flag.String("name", "empty", "plugin name")
	idx := flag.String("idx", "10", "plugin index")
	flag.Parse()

	s, err := stub.New(empty{}, stub.WithPluginName(*name), stub.WithPluginIdx(*idx), stub.WithSocketPath(*socket))
	if err != nil {
		fmt.Fprintln(os.Stderr, "emptyplugin:", err)
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := s.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "emptyplugin:", err)
		os.Exit(1)
	}
}
