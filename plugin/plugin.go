// Package plugin owns the NRI side of nri-volumes: it turns CreateContainer
// requests into volume mounts (parse the annotations, find the image's
// VOLUMEs, make a plan, acquire volumes from the store, adjust the container)
// and keeps the store's references in step with the runtime's containers and
// pods. NRI calls its handlers concurrently; the Plugin is safe for that, and
// every store mutation goes through the store's own locking. Nothing a
// handler does waits long: store lock waits are bounded by lockTimeout, the
// data of removed volumes is deleted by the store's reaper, and the
// store-wide pass after a restart (RemoveOrphans) runs in the background.
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
	"time"

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

	// podVolumes holds, per live pod sandbox, the volumes its containers
	// were given, for limits.volumesPerPod; a pod's entry is also what says
	// it is alive to the background removal of orphans. Synchronize rebuilds
	// it, CreateContainer adds to it and RemovePodSandbox drops a pod.
	podMu      sync.Mutex
	podVolumes map[string]map[string]struct{}

	// orphanMu runs one background removal of orphans at a time.
	orphanMu sync.Mutex
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
	if err := p.setConfig(context.Background(), cfg); err != nil {
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

// setConfig makes cfg the configuration in force, opening the store when
// the root changes; ctx bounds the wait for the store's lock.
func (p *Plugin) setConfig(ctx context.Context, cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.store != nil && p.cfg.Root == cfg.Root {
		p.cfg = cfg
		p.images = NewImageVolumes(cfg.ContainerdRoot)
		p.store.SetLockTimeout(time.Duration(cfg.LockTimeout))
		return nil
	}
	store, err := volumes.OpenContext(ctx, cfg.Root)
	if err != nil {
		return fmt.Errorf("opening the volume store: %w", err)
	}
	store.SetLockTimeout(time.Duration(cfg.LockTimeout))
	store.StartReaper(func(err error) {
		p.log.WithError(err).Warn("deleting the data of removed volumes")
	})
	if p.store != nil {
		p.store.Close()
	}
	p.cfg, p.store, p.images = cfg, store, NewImageVolumes(cfg.ContainerdRoot)
	return nil
}

func (p *Plugin) state() (*config.Config, *volumes.Store, *ImageVolumes) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cfg, p.store, p.images
}

// Configure takes the configuration containerd passes from its
// plugin_config_path; an empty one keeps what the command line gave.
func (p *Plugin) Configure(ctx context.Context, cfgText, runtime, version string) (api.EventMask, error) {
	log := p.log.WithFields(logrus.Fields{"runtime": runtime, "runtimeVersion": version})
	if strings.TrimSpace(cfgText) != "" {
		cfg, err := config.Parse([]byte(cfgText))
		if err != nil {
			return 0, fmt.Errorf("configuration from the runtime: %w", err)
		}
		// Configure is an NRI request: the store's lock is waited for no
		// longer than the new configuration's lockTimeout.
		ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.LockTimeout))
		defer cancel()
		if err := p.setConfig(ctx, cfg); err != nil {
			return 0, err
		}
		log = log.WithField("source", "runtime")
	}
	cfg := p.Config()
	log.WithFields(logrus.Fields{
		"root": cfg.Root, "imageVolumes": cfg.ImageVolumes.Mode, "imageVolumesPodOverride": cfg.ImageVolumes.PodOverride, "keepAfterPod": cfg.AnonymousVolumes.KeepAfterPod,
		"tmpfsDefault": cfg.Tmpfs.DefaultSize.String(), "tmpfsMax": cfg.Tmpfs.MaxSize.String(),
		"allowedHostPaths": cfg.BindMounts.AllowedHostPaths,
	}).Info("configured")
	return 0, nil
}

// Synchronize rebuilds the store's references from the runtime's containers,
// so that rm and prune refuse the volumes they use as soon as it returns.
// After it returns, in the background, the anonymous volumes of pods that
// went away while the plugin was not running are removed: that pass reads
// the whole store, too slow for an NRI request.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	cfg, store, _ := p.state()
	refs := map[string][]string{}
	podVolumes := make(map[string]map[string]struct{}, len(pods))
	for _, pod := range pods {
		podVolumes[pod.GetId()] = map[string]struct{}{}
	}
	for _, c := range ctrs {
		for _, m := range c.GetMounts() {
			if ns, name, ok := store.VolumeForMountSource(m.Source); ok {
				key := ns + "/" + name
				refs[key] = append(refs[key], c.GetId())
				addPodVolume(podVolumes, c.GetPodSandboxId(), key)
			}
		}
	}
	p.podMu.Lock()
	p.podVolumes = podVolumes
	p.podMu.Unlock()
	if err := store.SetReferences(refs); err != nil {
		return nil, fmt.Errorf("synchronizing the volume store: %w", err)
	}
	p.log.WithFields(logrus.Fields{"pods": len(pods), "containers": len(ctrs), "volumesInUse": len(refs)}).Info("synchronized")
	go p.removeOrphans(store, cfg.AnonymousVolumes.KeepAfterPod)
	return nil, nil
}

// removeOrphans removes the anonymous volumes of pods that are gone: not
// reported by Synchronize, or removed since, and not seen in a
// CreateContainer since.
func (p *Plugin) removeOrphans(store *volumes.Store, keep bool) {
	p.orphanMu.Lock()
	defer p.orphanMu.Unlock()
	live := func(pod string) bool {
		p.podMu.Lock()
		defer p.podMu.Unlock()
		_, ok := p.podVolumes[pod]
		return ok
	}
	removed, err := store.RemoveOrphans(live, keep)
	for _, key := range removed {
		p.log.WithField("volume", key).Info("removed anonymous volume of a pod that is gone")
	}
	if err != nil {
		p.log.WithError(err).Warn("removing the anonymous volumes of pods that are gone")
		return
	}
	p.log.Debug("removed the anonymous volumes of pods that are gone")
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
			log.WithFields(logrus.Fields{"volume": v.Namespace + "/" + v.Name, "target": m.Target, "anonymous": v.Anonymous}).Info("mounting volume")
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
	if have == nil {
		p.podVolumes[pod.GetId()] = map[string]struct{}{}
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
		ImageMode: cfg.ImageVolumes.Mode, Image: ctr.GetImage().GetName(), Mounts: ctr.GetMounts(),
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
		if mode != req.ImageMode && !cfg.ImageVolumes.PodOverride {
			return nil, fmt.Errorf("%w %s: value %q: pods may not override imageVolumes (%s) here: the configuration sets imageVolumes.podOverride: false",
				ErrInvalid, key, value, req.ImageMode)
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
