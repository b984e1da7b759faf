package metrics

import (
	"context"
	"slices"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"

	"github.com/nri-volumes/nri-volumes/plugin"
)

// Instrumented is the plugin with each NRI handler counted and timed. The
// stub subscribes to the events whose interfaces its plugin implements, so
// Instrumented implements exactly the ones plugin.Plugin does (a test checks).
type Instrumented struct {
	p *plugin.Plugin
	m *Metrics
}

var (
	_ stub.ConfigureInterface       = (*Instrumented)(nil)
	_ stub.SynchronizeInterface     = (*Instrumented)(nil)
	_ stub.CreateContainerInterface = (*Instrumented)(nil)
	_ stub.StartContainerInterface  = (*Instrumented)(nil)
	_ stub.RemoveContainerInterface = (*Instrumented)(nil)
	_ stub.RemovePodInterface       = (*Instrumented)(nil)
)

// Instrument wraps p; hand the result to stub.New instead of p.
func (m *Metrics) Instrument(p *plugin.Plugin) *Instrumented {
	return &Instrumented{p: p, m: m}
}

// Configure counts and times plugin.Plugin.Configure.
func (i *Instrumented) Configure(ctx context.Context, cfg, runtime, version string) (api.EventMask, error) {
	start := time.Now()
	mask, err := i.p.Configure(ctx, cfg, runtime, version)
	i.m.observe("Configure", start, err)
	return mask, err
}

// Synchronize counts and times plugin.Plugin.Synchronize; once it succeeds
// the plugin is registered with containerd.
func (i *Instrumented) Synchronize(ctx context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	start := time.Now()
	updates, err := i.p.Synchronize(ctx, pods, ctrs)
	i.m.observe("Synchronize", start, err)
	if err == nil {
		i.m.SetConnected(true)
	}
	return updates, err
}

// CreateContainer counts and times plugin.Plugin.CreateContainer, and the
// copy-ups it hands to the OCI hook.
func (i *Instrumented) CreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	start := time.Now()
	adjust, updates, err := i.p.CreateContainer(ctx, pod, ctr)
	i.m.observe("CreateContainer", start, err)
	for _, h := range adjust.GetHooks().GetCreateRuntime() {
		if !slices.Contains(h.GetArgs(), "copyup") {
			continue
		}
		i.m.copyUps.Inc()
		for _, a := range h.GetArgs() {
			if a == "--volume" {
				i.m.copyUpVols.Inc()
			}
		}
	}
	return adjust, updates, err
}

// StartContainer counts and times plugin.Plugin.StartContainer.
func (i *Instrumented) StartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	start := time.Now()
	err := i.p.StartContainer(ctx, pod, ctr)
	i.m.observe("StartContainer", start, err)
	return err
}

// RemoveContainer counts and times plugin.Plugin.RemoveContainer.
func (i *Instrumented) RemoveContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	start := time.Now()
	err := i.p.RemoveContainer(ctx, pod, ctr)
	i.m.observe("RemoveContainer", start, err)
	return err
}

// RemovePodSandbox counts and times plugin.Plugin.RemovePodSandbox.
func (i *Instrumented) RemovePodSandbox(ctx context.Context, pod *api.PodSandbox) error {
	start := time.Now()
	err := i.p.RemovePodSandbox(ctx, pod)
	i.m.observe("RemovePodSandbox", start, err)
	return err
}
