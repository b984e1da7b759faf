// Package plugin owns the NRI side of nri-volumes: it turns CreateContainer
// requests into volume mounts (parse the annotations, find the image's
// VOLUMEs, make a plan, acquire volumes from the store, adjust the container)
// and keeps the store's references in step with the runtime's containers and
// pods. NRI calls its handlers concurrently; the Plugin is safe for that, and
// every store mutation goes through the store's own locking.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
	"github.com/sirupsen/logrus"
)

// Plugin is the NRI plugin.
type Plugin struct {
	log     *logrus.Logger
	resolve Resolver

	mu     sync.RWMutex
	cfg    *config.Config
	store  *volumes.Store
	images *ImageVolumes

	// podVolumes holds, per pod sandbox, the volumes its containers were
	// given, for limits.volumesPerPod. Synchronize rebuilds it and
	// RemovePodSandbox drops a pod's entry.
	podMu      sync.Mutex
	podVolumes map[string]map[string]struct{}
}

var (
	_ stub.ConfigureInterface       = (*Plugin)(nil)
	_ stub.SynchronizeInterface     = (*Plugin)(nil)
	_ stub.CreateContainerInterface = (*Plugin)(nil)
	_ stub.RemoveContainerInterface = (*Plugin)(nil)
	_ stub.RemovePodInterface       = (*Plugin)(nil)
)

// New makes a plugin with cfg, opening its store.
func New(cfg *config.Config, log *logrus.Logger) (*Plugin, error) {
	p := &Plugin{log: log, resolve: filepath.EvalSymlinks, podVolumes: map[string]map[string]struct{}{}}
	if err := p.setConfig(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Close closes the store; call it after the stub has stopped.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.store.Close()
}

// Config returns the configuration in force.
func (p *Plugin) Config() *config.Config {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg
}

func (p *Plugin) setConfig(cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.store != nil && p.cfg.Root == cfg.Root {
		p.cfg = cfg
		p.images = NewImageVolumes(cfg.ContainerdRoot)
		p.store.SetSizePolicy(sizePolicy(cfg))
		return nil
	}
	store, err := volumes.Open(cfg.Root)
	if err != nil {
		return fmt.Errorf("opening the volume store: %w", err)
	}
	store.SetSizePolicy(sizePolicy(cfg))
	if p.store != nil {
		p.store.Close()
	}
	p.cfg, p.store, p.images = cfg, store, NewImageVolumes(cfg.ContainerdRoot)
	return nil
}

func sizePolicy(cfg *config.Config) volumes.SizePolicy {
	return volumes.SizePolicy{Backend: volumes.Backend(cfg.Sizes.Backend), NamespaceBytes: int64(cfg.Limits.NamespaceBytes)}
}

func (p *Plugin) state() (*config.Config, *volumes.Store, *ImageVolumes) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg, p.store, p.images
}

// Configure takes the configuration containerd passes from its
// plugin_config_path; an empty one keeps what the command line gave.
func (p *Plugin) Configure(_ context.Context, cfgText, runtime, version string) (api.EventMask, error) {
	log := p.log.WithFields(logrus.Fields{"runtime": runtime, "runtimeVersion": version})
	if strings.TrimSpace(cfgText) != "" {
		cfg, err := config.Parse([]byte(cfgText))
		if err != nil {
			return 0, fmt.Errorf("configuration from the runtime: %w", err)
		}
		if err := p.setConfig(cfg); err != nil {
			return 0, err
		}
		log = log.WithField("source", "runtime")
	}
	cfg := p.Config()
	log.WithFields(logrus.Fields{
		"root": cfg.Root, "imageVolumes": cfg.ImageVolumes, "keepAfterPod": cfg.AnonymousVolumes.KeepAfterPod,
		"tmpfsDefault": cfg.Tmpfs.DefaultSize.String(), "tmpfsMax": cfg.Tmpfs.MaxSize.String(),
		"allowedHostPaths": cfg.BindMounts.AllowedHostPaths,
	}).Info("configured")
	return 0, nil
}

// Synchronize rebuilds the store's references from the runtime's containers
// and removes the anonymous volumes of pods that went away while the plugin
// was not running.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	cfg, store, _ := p.state()
	live := make(map[string]bool, len(pods))
	for _, pod := range pods {
		live[pod.GetId()] = true
	}
	prefix := filepath.Join(store.Root(), "volumes") + "/"
	refs := map[string][]string{}
	podVolumes := map[string]map[string]struct{}{}
	for _, c := range ctrs {
		for _, m := range c.GetMounts() {
			if key, ok := volumeKey(prefix, m.Source); ok {
				refs[key] = append(refs[key], c.GetId())
				addPodVolume(podVolumes, c.GetPodSandboxId(), key)
			}
		}
	}
	p.podMu.Lock()
	p.podVolumes = podVolumes
	p.podMu.Unlock()
	if err := store.Reconcile(refs, live, cfg.AnonymousVolumes.KeepAfterPod); err != nil {
		return nil, fmt.Errorf("synchronizing the volume store: %w", err)
	}
	p.log.WithFields(logrus.Fields{"pods": len(pods), "containers": len(ctrs), "volumesInUse": len(refs)}).Info("synchronized")
	return nil, nil
}

// volumeKey returns NS/NAME for a mount source ROOT/volumes/NS/NAME/_data.
func volumeKey(prefix, source string) (string, bool) {
	rest, ok := strings.CutPrefix(source, prefix)
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] != "_data" {
		return "", false
	}
	return parts[0] + "/" + parts[1], true
}

// CreateContainer provisions the container's volumes and adds their mounts.
func (p *Plugin) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	cfg, store, images := p.state()
	log := p.log.WithField("container", containerName(pod, ctr))
	req, err := p.request(cfg, images, pod, ctr)
	if err != nil {
		return nil, nil, err
	}
	plan, err := MakePlan(cfg, req, p.resolve)
	if err != nil {
		return nil, nil, err
	}
	if len(plan.Mounts) == 0 && len(plan.Remove) == 0 {
		log.Debug("no volumes")
		return nil, nil, nil
	}
	if err := p.claimPodVolumes(cfg, pod, plan.Volumes); err != nil {
		return nil, nil, fmt.Errorf("volumes for container %q: %w", ctr.GetName(), err)
	}
	vols, err := store.Acquire(ctr.GetId(), plan.Volumes)
	if err != nil {
		return nil, nil, fmt.Errorf("volumes for container %q: %w", ctr.GetName(), err)
	}
	adjust := &api.ContainerAdjustment{}
	for _, dst := range plan.Remove {
		adjust.RemoveMount(dst)
	}
	var copyUps []string
	for _, m := range plan.Mounts {
		mount := &api.Mount{Destination: m.Target, Options: m.Options}
		switch m.Kind {
		case KindVolume:
			v := vols[m.Volume]
			mount.Type, mount.Source = "bind", v.Mountpoint
			if m.CopyUp && isEmptyDir(v.Mountpoint) {
				copyUps = append(copyUps, v.Namespace+"/"+v.Name+"="+m.Target)
			}
			log.WithFields(logrus.Fields{"volume": v.Namespace + "/" + v.Name, "target": m.Target, "anonymous": v.Anonymous, "limit": v.Limit}).Info("mounting volume")
		case KindBind:
			mount.Type, mount.Source = "bind", m.Source
			log.WithFields(logrus.Fields{"source": m.Source, "target": m.Target}).Info("mounting host path")
		case KindTmpfs:
			mount.Type, mount.Source = "tmpfs", "tmpfs"
			log.WithFields(logrus.Fields{"target": m.Target, "options": strings.Join(m.Options, ",")}).Info("mounting tmpfs")
		}
		adjust.AddMount(mount)
	}
	if len(copyUps) > 0 {
		adjust.AddHooks(&api.Hooks{CreateRuntime: []*api.Hook{copyUpHook(cfg, store.Root(), copyUps)}})
	}
	return adjust, nil, nil
}

// claimPodVolumes counts the volumes of a request against the pod's limit and
// records them. A container that fails after this keeps its claim until the
// pod goes, which errs on the side of the limit.
func (p *Plugin) claimPodVolumes(cfg *config.Config, pod *api.PodSandbox, reqs []volumes.Request) error {
	p.podMu.Lock()
	defer p.podMu.Unlock()
	have := p.podVolumes[pod.GetId()]
	added := 0
	keys := make([]string, 0, len(reqs))
	for _, r := range reqs {
		name := r.Name
		if name == "" {
			name = volumes.AnonymousName(*r.Owner)
		}
		key := r.Namespace + "/" + name
		keys = append(keys, key)
		if _, ok := have[key]; !ok {
			added++
		}
	}
	if n := len(have) + added; n > cfg.Limits.VolumesPerPod {
		return fmt.Errorf("pod %q would use %d volumes, more than the %d allowed (limits.volumesPerPod)", pod.GetName(), n, cfg.Limits.VolumesPerPod)
	}
	for _, k := range keys {
		addPodVolume(p.podVolumes, pod.GetId(), k)
	}
	return nil
}

func addPodVolume(m map[string]map[string]struct{}, podID, key string) {
	if m[podID] == nil {
		m[podID] = map[string]struct{}{}
	}
	m[podID][key] = struct{}{}
}

// copyUpHook is the createRuntime hook that copies the image's content into
// new volumes: it runs before the container's process and outside NRI's
// request timeout.
func copyUpHook(cfg *config.Config, root string, specs []string) *api.Hook {
	args := []string{cfg.HookPath, "hook", "copyup", "--root", root,
		"--max-bytes", strconv.FormatInt(int64(cfg.Limits.CopyUpMaxSize), 10),
		"--max-files", strconv.FormatInt(cfg.Limits.CopyUpMaxFiles, 10)}
	for _, s := range specs {
		args = append(args, "--volume", s)
	}
	return &api.Hook{Path: cfg.HookPath, Args: args}
}

// isEmptyDir reports whether dir has no entries; copy-up is only needed then.
// The hook checks again under the store's lock.
func isEmptyDir(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return true
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0
}

// request gathers what the plan needs from the pod, the container and the image.
func (p *Plugin) request(cfg *config.Config, images *ImageVolumes, pod *api.PodSandbox, ctr *api.Container) (*Request, error) {
	ns := pod.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	if err := volumes.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("pod namespace %q: %w", ns, err)
	}
	req := &Request{
		Namespace: ns, PodName: pod.GetName(), PodSandboxID: pod.GetId(),
		ContainerID: ctr.GetId(), ContainerName: ctr.GetName(),
		ImageMode: cfg.ImageVolumes, Image: ctr.GetImage().GetName(), Mounts: ctr.GetMounts(),
	}
	if key, value, ok := effectiveAnnotation(pod, ctr, VolumesKey); ok {
		items, err := ParseVolumes(key, value, cfg.Tmpfs)
		if err != nil {
			return nil, err
		}
		req.Items, req.ItemsKey = items, key
	}
	if key, value, ok := effectiveAnnotation(pod, ctr, ImageVolumesKey); ok {
		mode, err := ParseImageVolumeMode(key, value)
		if err != nil {
			return nil, err
		}
		req.ImageMode = mode
	}
	if req.ImageMode != config.ImageVolumeIgnore {
		targets, _, err := images.ForContainer(ctr)
		if err != nil {
			return nil, fmt.Errorf("finding the VOLUMEs of image %q: %w", req.Image, err)
		}
		req.ImageVolumes = targets
	}
	return req, nil
}

// effectiveAnnotation looks key up as NRI's GetEffectiveAnnotation does (a
// container-scoped key wins over pod-scoped ones), first in the container's
// own annotations, then in the pod's. It returns the key that matched.
func effectiveAnnotation(pod *api.PodSandbox, ctr *api.Container, key string) (string, string, bool) {
	keys := []string{key + "/container." + ctr.GetName(), key + "/pod", key}
	for _, annotations := range []map[string]string{ctr.GetAnnotations(), pod.GetAnnotations()} {
		for _, k := range keys {
			if v, ok := annotations[k]; ok {
				return k, v, true
			}
		}
	}
	return "", "", false
}

// RemoveContainer releases the container's volumes.
func (p *Plugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	_, store, _ := p.state()
	if err := store.Release(ctr.GetId()); err != nil {
		return fmt.Errorf("releasing the volumes of container %q: %w", ctr.GetName(), err)
	}
	p.log.WithField("container", containerName(pod, ctr)).Debug("released volumes")
	return nil
}

// RemovePodSandbox removes the pod's anonymous volumes, unless configured to keep them.
func (p *Plugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	cfg, store, _ := p.state()
	log := p.log.WithField("pod", pod.GetNamespace()+"/"+pod.GetName())
	p.podMu.Lock()
	delete(p.podVolumes, pod.GetId())
	p.podMu.Unlock()
	if cfg.AnonymousVolumes.KeepAfterPod {
		log.Debug("keeping anonymous volumes (anonymousVolumes.keepAfterPod)")
		return nil
	}
	removed, err := store.RemovePodVolumes(pod.GetId())
	for _, name := range removed {
		log.WithField("volume", name).Info("removed anonymous volume")
	}
	if err != nil && !errors.Is(err, volumes.ErrNotFound) {
		return fmt.Errorf("removing the anonymous volumes of pod %q: %w", pod.GetName(), err)
	}
	return nil
}

func containerName(pod *api.PodSandbox, ctr *api.Container) string {
	return pod.GetNamespace() + "/" + pod.GetName() + "/" + ctr.GetName()
}
