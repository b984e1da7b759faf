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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/sirupsen/logrus"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/hook"
	"github.com/nri-volumes/nri-volumes/internal/idmap"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// Plugin is the NRI plugin.
type Plugin struct {
	log *logrus.Logger

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

	// retries retries the removals that found the store busy; see retry.go.
	retries *retries

	// seeds runs the pulls of volumes seeded from registries; see seed.go.
	seeds *seeder
}

var (
	_ stub.ConfigureInterface       = (*Plugin)(nil)
	_ stub.SynchronizeInterface     = (*Plugin)(nil)
	_ stub.CreateContainerInterface = (*Plugin)(nil)
	_ stub.StartContainerInterface  = (*Plugin)(nil)
	_ stub.RemoveContainerInterface = (*Plugin)(nil)
	_ stub.RemovePodInterface       = (*Plugin)(nil)
)

// New makes a plugin with cfg, opening its store.
func New(cfg *config.Config, log *logrus.Logger) (*Plugin, error) {
	p := &Plugin{log: log, podVolumes: map[string]map[string]struct{}{}, retries: newRetries(), seeds: newSeeder()}
	if err := p.setConfig(context.Background(), cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Close closes the store; call it after the stub has stopped.
func (p *Plugin) Close() error {
	p.retries.close()
	p.seeds.close()
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
		p.images = NewImageVolumes(cfg.ContainerdRoot, cfg.Limits.VolumesPerContainer)
		p.store.Reconfigure(reloadable(cfg)...)
		return nil
	}
	store, err := volumes.Open(cfg.Root, append(reloadable(cfg), volumes.WithContext(ctx),
		volumes.WithRepairs(func(r string) { p.log.Warn("opening the volume store: " + r) }))...)
	if err != nil {
		return fmt.Errorf("opening the volume store: %w", err)
	}
	store.Start(
		volumes.Reaper(func(err error) {
			p.log.WithError(err).Warn("deleting the data of removed volumes")
		}),
		volumes.Spares(func(err error) {
			p.log.WithError(err).Warn("making spares for new volumes; new volumes are made without them meanwhile")
		}),
		// A CLI killed while it held a volume frozen for a snapshot is
		// undone within seconds, not at the next start.
		volumes.Thawer(5*time.Second),
	)
	if p.store != nil {
		p.store.Close()
	}
	p.cfg, p.store, p.images = cfg, store, NewImageVolumes(cfg.ContainerdRoot, cfg.Limits.VolumesPerContainer)
	return nil
}

// reloadable are the store's options that cfg sets and that a reload of
// the configuration changes on the open store.
func reloadable(cfg *config.Config) []volumes.Option {
	return []volumes.Option{
		volumes.WithLockTimeout(time.Duration(cfg.LockTimeout)),
		volumes.WithFormatBudget(formatBudget(cfg)),
		volumes.WithSizePolicy(SizePolicy(cfg)),
	}
}

// formatBudget is how long a CreateContainer waits for the images of its
// new sized volumes, formatted outside the store's lock: half of lockTimeout,
// so that the wait, the lock's and the work under it stay inside
// containerd's request timeout. A request whose images are not ready by then
// fails, and kubelet's retry finds them ready.
func formatBudget(cfg *config.Config) time.Duration {
	return time.Duration(cfg.LockTimeout) / 2
}

// SizePolicy is the store's policy for sized volumes that cfg sets
// (sizes.backend, limits.namespaceBytes, limits.overcommit): the plugin's
// and the CLI's store follow the same one.
func SizePolicy(cfg *config.Config) volumes.SizePolicy {
	return volumes.SizePolicy{Backend: volumes.Backend(cfg.Sizes.Backend), NamespaceBytes: int64(cfg.Limits.NamespaceBytes), Overcommit: cfg.Limits.Overcommit}
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
// went away while the plugin was not running are removed, and so are the
// empty image targets of images that are gone: those passes read the whole
// store, too slow for an NRI request.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	cfg, store, images := p.state()
	refs := map[string][]string{}
	podVolumes := make(map[string]map[string]struct{}, len(pods))
	livePods := make(map[string]bool, len(pods))
	for _, pod := range pods {
		podVolumes[pod.GetId()] = map[string]struct{}{}
		livePods[pod.GetId()] = true
	}
	liveCtrs := make(map[string]bool, len(ctrs))
	for _, c := range ctrs {
		liveCtrs[c.GetId()] = true
		for _, m := range c.GetMounts() {
			if ns, name, ok := store.Paths().VolumeForMountSource(m.Source); ok {
				key := ns + "/" + name
				refs[key] = append(refs[key], c.GetId())
				addPodVolume(podVolumes, c.GetPodSandboxId(), key)
			}
		}
	}
	// A pin that cannot go now only holds a mount: it must not keep the
	// plugin out of NRI. volume check reports what stays.
	if removed, err := store.Pins().RemoveStale(liveCtrs); err != nil {
		p.log.WithError(err).Warn("removing the pins of containers that are gone")
	} else if len(removed) > 0 {
		p.log.WithField("containers", removed).Info("removed the pins of containers that are gone")
	}
	p.podMu.Lock()
	p.podVolumes = podVolumes
	p.podMu.Unlock()
	if err := store.SetReferences(refs); err != nil {
		return nil, fmt.Errorf("synchronizing the volume store: %w", err)
	}
	if err := store.PodBudgets().ForgetAllBut(func(id string) bool { return livePods[id] }); err != nil {
		p.log.WithError(err).Warn("cannot forget the copy-up bytes of removed pods")
	}
	p.log.WithFields(logrus.Fields{"pods": len(pods), "containers": len(ctrs), "volumesInUse": len(refs)}).Info("synchronized")
	go func() {
		p.removeOrphans(store, cfg.AnonymousVolumes.KeepAfterPod)
		removeGoneImageTargets(store, images, p.log)
	}()
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
	plan, err := MakePlan(cfg, req)
	if err != nil {
		return nil, nil, err
	}
	if len(plan.Mounts) == 0 && len(plan.Remove) == 0 {
		log.Debug("no volumes")
		return nil, nil, nil
	}
	srcs, denied, err := openBindSources(cfg, req.ItemsKey, plan)
	if err != nil {
		return nil, nil, fmt.Errorf("volumes for container %q: %w", ctr.GetName(), err)
	}
	defer closeAll(srcs)
	if userns, nsPath := userNamespace(ctr); userns {
		if err := checkIDMap(log, plan, srcs, store.Paths().VolumesDir(), nsPath); err != nil {
			return nil, nil, fmt.Errorf("volumes for container %q: %w", ctr.GetName(), err)
		}
	}
	if err := p.claimPodVolumes(cfg, pod, plan.Volumes); err != nil {
		return nil, nil, fmt.Errorf("volumes for container %q: %w", ctr.GetName(), err)
	}
	release, err := p.seeds.wait(cfg, store, req, plan, log)
	if err != nil {
		return nil, nil, fmt.Errorf("volumes for container %q: %w", ctr.GetName(), err)
	}
	imageHex := imageDigestHex(ctr)
	knownEmpty := knownEmptyTargets(store, imageHex, plan, log)
	syncLater(plan)
	sources, err := acquire(store, ctr.GetId(), req.ItemsKey, plan, srcs, denied)
	release() // the volumes without from: are made now, or not at all
	if err != nil {
		return nil, nil, fmt.Errorf("volumes for container %q: %w", ctr.GetName(), err)
	}
	adjust := &api.ContainerAdjustment{}
	for _, dst := range plan.Remove {
		adjust.RemoveMount(dst)
	}
	mk := mounter{store: store, sources: sources, knownEmpty: knownEmpty, adopter: newAdopter(cfg, store, req, log),
		hookArgs: hook.CopyUpArgs{ImageHex: imageHex}, log: log}
	defer mk.adopter.close()
	for i, m := range plan.Mounts {
		adjust.AddMount(mk.mount(i, m))
	}
	hookArgs := mk.hookArgs
	syncNew(store, sources.vols, log)
	if len(hookArgs.CopyUps) > 0 && cfg.Limits.CopyUpMaxSizePerPod > 0 && pod.GetId() != "" {
		// The hook of the pod's first container opens the pod's record
		// rather than making its inode.
		if err := store.PodBudgets().Prepare(pod.GetId()); err != nil {
			log.WithError(err).Debug("copy-up: the pod's copy-up record is left to the hook")
		}
	}
	if len(hookArgs.CopyUps) > 0 || len(hookArgs.Chowns) > 0 {
		adjust.AddHooks(&api.Hooks{CreateRuntime: []*api.Hook{copyUpHook(cfg, pod.GetId(), hookArgs)}})
	}
	return adjust, nil, nil
}

// mounter turns a container's planned mounts into NRI mounts, gathering
// what the copy-up hook must do for them.
type mounter struct {
	store      *volumes.Store
	sources    *mountSources
	knownEmpty map[string]bool
	adopter    *adopter
	hookArgs   hook.CopyUpArgs
	log        *logrus.Entry
}

// mount is the mount of the plan's i-th mount, m.
func (mk *mounter) mount(i int, m PlannedMount) *api.Mount {
	mount := &api.Mount{Destination: m.Target, Options: m.Options}
	switch m.Kind {
	case KindVolume:
		v := mk.sources.vols[m.Volume]
		mount.Type, mount.Source = "bind", v.Mountpoint
		if pin, ok := mk.sources.pins[i]; ok {
			mount.Source = pin
		}
		if (m.CopyUp || v.ClonePending != "") && hookCopiesUp(mk.store, v, m.Target, mk.knownEmpty[m.Target], mk.adopter, mk.log) {
			addCopyUp(&mk.hookArgs, v, m.Target)
		}
		if m.Chown && v.Chowned == nil {
			mk.hookArgs.Chowns = append(mk.hookArgs.Chowns, volumes.VolumeRef{Namespace: v.Namespace, Name: v.Name})
		}
		fields := logrus.Fields{"volume": v.Namespace + "/" + v.Name, "target": m.Target, "anonymous": v.Anonymous, "limit": v.Limit}
		if m.Subpath != "" {
			fields["subpath"], fields["pin"] = m.Subpath, mount.Source
		}
		mk.log.WithFields(fields).Info("mounting volume")
	case KindBind:
		mount.Type, mount.Source = "bind", mk.sources.pins[i]
		mk.log.WithFields(logrus.Fields{"source": m.Source, "pin": mount.Source, "target": m.Target}).Info("mounting host path")
	case KindTmpfs:
		mount.Type, mount.Source = "tmpfs", "tmpfs"
		mk.log.WithFields(logrus.Fields{"target": m.Target, "options": strings.Join(m.Options, ",")}).Info("mounting tmpfs")
	}
	return mount
}

// syncLater has the plan's new named volumes made without fsyncs: they are
// synced in the background (see syncNew), and StartContainer holds the
// container's start until they are durable.
func syncLater(plan *Plan) {
	for i := range plan.Volumes {
		plan.Volumes[i].PersistLater = true
	}
}

// knownEmptyTargets are the targets of the plan's copy-up mounts where an
// earlier container of the image showed it has nothing to copy (see
// imageTargetEmpty).
func knownEmptyTargets(store *volumes.Store, imageHex string, plan *Plan, log *logrus.Entry) map[string]bool {
	var empty map[string]bool
	for _, m := range plan.Mounts {
		if m.Kind != KindVolume || !m.CopyUp || !imageTargetEmpty(store, imageHex, m.Target, log) {
			continue
		}
		if empty == nil {
			empty = map[string]bool{}
		}
		empty[m.Target] = true
	}
	return empty
}

// syncNew starts the fsyncs of the named volumes this request made, which
// it made without them (volumes.Request.PersistLater), in the background, while
// containerd goes on creating the container. StartContainer, which
// containerd calls before the container's process runs, waits for them
// (and syncs any other volume the container mounts that still waits for
// its sync, one a plugin that died left behind); so does the copy-up hook,
// where there is one.
func syncNew(store *volumes.Store, vols []*volumes.Volume, log *logrus.Entry) {
	for _, v := range vols {
		if v.Anonymous || !v.Created || !v.PersistLater {
			continue
		}
		ns, name := v.Namespace, v.Name
		go func() {
			if err := store.CopyUps().Persist(ns, name); err != nil {
				log.WithError(err).WithField("volume", ns+"/"+name).Warn("syncing a new volume in the background; the container's start syncs it")
			}
		}()
	}
}

// StartContainer holds the start of a container until the volumes it mounts
// are durable (see syncNew). containerd calls it after the container and its
// hooks are set up and before its process runs, and does not start the
// container when it fails. The background syncs are mostly done by then,
// and Persist is one lookup per volume.
//
// The wait is bounded by lockTimeout, below containerd's request timeout: a
// plugin that answers late is dropped by containerd, which then starts the
// container anyway, and holds every other NRI request of the node meanwhile.
// A disk that slow fails the start instead, with a message that says so;
// the sync goes on, and a retried start finds it done.
func (p *Plugin) StartContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	cfg, store, _ := p.state()
	var refs []volumes.VolumeRef
	for _, m := range ctr.GetMounts() {
		if ns, name, ok := store.Paths().VolumeForMountSource(m.GetSource()); ok {
			refs = append(refs, volumes.VolumeRef{Namespace: ns, Name: name})
		}
	}
	if len(refs) == 0 {
		return nil
	}
	done := make(chan error, 1)
	go func() {
		var errs []error
		for _, r := range refs {
			// A path shaped like a volume's that names none (a CRI mount
			// of the host path, say) has nothing to sync.
			if err := store.CopyUps().Persist(r.Namespace, r.Name); err != nil && !errors.Is(err, volumes.ErrNotFound) {
				errs = append(errs, err)
			}
		}
		done <- errors.Join(errs...)
	}()
	wait := time.Duration(cfg.LockTimeout)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("volumes of container %q are not durable: %w", containerName(pod, ctr), err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("volumes of container %q are not durable after %s (lockTimeout): the disk of the volume store is too slow to sync them; the start fails rather than run the container on volumes a crash could lose", containerName(pod, ctr), wait)
	}
}

// userNamespace reports whether the container gets a user namespace
// (kubelet's hostUsers: false) and the path of the one it joins, if it names
// one: CRI containers join their pod's.
func userNamespace(ctr *api.Container) (bool, string) {
	for _, ns := range ctr.GetLinux().GetNamespaces() {
		if ns.GetType() == "user" {
			return true, ns.GetPath()
		}
	}
	return false, ""
}

// checkIDMap makes sure, before any volume is made, that runc can idmap
// every volume (they live in the store's volumes directory) and bind mount
// of a container with a user namespace, so such a container is refused with
// a message that says why, never started on ids shifted into its range. A
// user namespace that the container makes afresh has no path to probe
// with, and a plugin outside the host's PID namespace cannot open the pod's;
// runc's own check then fails the start. A bind source is probed only
// once the allowlist admits it, through the object it pins, so that an
// annotation never makes the plugin look at any other host path.
func checkIDMap(log *logrus.Entry, plan *Plan, srcs map[int]*os.File, volumesDir, nsPath string) error {
	if nsPath == "" {
		return nil
	}
	volumesChecked := false // every volume lives in volumesDir: one probe serves all
	for i, m := range plan.Mounts {
		var err error
		switch m.Kind {
		case KindVolume:
			if volumesChecked {
				continue
			}
			volumesChecked = true
			err = idmap.Check(volumesDir, nsPath)
		case KindBind:
			err = idmap.CheckFile(srcs[i], m.Source, nsPath)
		case KindTmpfs:
			continue
		}
		if errors.Is(err, idmap.ErrNoUserNS) {
			log.WithError(err).Warn("cannot check that the volumes can be idmapped; runc will")
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s at %s: %w", m.Kind, m.Target, err)
		}
	}
	return nil
}

// mountSources are what a container's mounts come from: the volumes of the
// plan, and the pins of its bind mounts and subpaths by mount index.
type mountSources struct {
	vols []*volumes.Volume
	pins map[int]string
}

// acquire pins the plan's bind sources and checks the pinned trees against
// denied (see checkPins), then acquires its volumes and pins its subpaths. On failure, nothing it made stays: no pin, no reference.
// Pins of an earlier try of the same container are replaced.
func acquire(store *volumes.Store, id, key string, plan *Plan, srcs map[int]*os.File, denied *denySet) (*mountSources, error) {
	fail := func(err error) (*mountSources, error) {
		if uerr := store.Pins().Remove(id); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return nil, err
	}
	pins, err := pinHostPaths(store, id, key, plan, srcs, denied)
	if err != nil {
		return fail(err)
	}
	subs := plan.subpaths()
	vols, subPins, err := store.Acquire(id, plan.Volumes, subs)
	if se := (*volumes.SubpathError)(nil); errors.As(err, &se) {
		return fail(fmt.Errorf("%w %s: item %s: %w", ErrInvalid, key, plan.Mounts[se.Subpath.Pin].Item, err))
	}
	if item, ok := plan.externalItem(err); ok {
		return fail(fmt.Errorf("%s: item %s: %w", key, item, err))
	}
	if fe := (*volumes.FormattingError)(nil); errors.As(err, &fe) {
		return fail(fmt.Errorf("%s: item %s: %w", key, plan.itemOf(fe.Namespace, fe.Name), err))
	}
	if err != nil {
		return fail(err)
	}
	for i, sub := range subs {
		pins[sub.Pin] = subPins[i]
	}
	return &mountSources{vols: vols, pins: pins}, nil
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
		key := r.Namespace + "/" + volumeName(r)
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

// addCopyUp has the hook copy up into v, mounted at target, keep the owner
// and mode v was made with, and make a named v durable.
func addCopyUp(h *hook.CopyUpArgs, v *volumes.Volume, target string) {
	ref := volumes.VolumeRef{Namespace: v.Namespace, Name: v.Name}
	h.CopyUps = append(h.CopyUps, volumes.CopyUpSpec{VolumeRef: ref, Target: target})
	if v.UID != nil || v.GID != nil || v.Mode != "" {
		h.KeepOwners = append(h.KeepOwners, ref)
	}
	if !v.Anonymous && !slices.Contains(h.Syncs, ref) {
		h.Syncs = append(h.Syncs, ref)
	}
}

// copyUpHook is the createRuntime hook that copies the image's content into
// new volumes and chowns those mounted with U: it runs before the
// container's process and outside NRI's request timeout, and it reads the
// container's user and id mappings from the OCI spec.
func copyUpHook(cfg *config.Config, podID string, h hook.CopyUpArgs) *api.Hook {
	h.Root = cfg.Root
	h.MaxBytes, h.MaxFiles = int64(cfg.Limits.CopyUpMaxSize), cfg.Limits.CopyUpMaxFiles
	if cfg.Limits.CopyUpMaxSizePerPod > 0 && podID != "" {
		h.Pod, h.PodMaxBytes = podID, int64(cfg.Limits.CopyUpMaxSizePerPod)
	}
	return &api.Hook{Path: cfg.HookPath, Args: append([]string{cfg.HookPath, "hook"}, h.Argv()...)}
}

// hookCopiesUp reports whether the hook copies up into v, mounted at
// target: unless the volume needs none, an earlier container of the image
// showed it has nothing there (knownEmpty) and the hook would leave v as it
// is, or the volume took containerd's own copy over. Adopting comes last:
// it fills the volume.
//
// A volume this request made is empty and was never filled, so it needs no
// look; one that existed is read once (CopyUps.Status). When the store
// cannot tell, the hook is added: it decides again under the volume's lock.
// An empty image leaves an existing volume as it is unless a copy-up into it
// was cut short, which the hook finishes or throws away, or its root lacks
// the root:root 0755 a copy of the bare mount point gives it, and it was
// made with no owner or mode of its own, which such a copy keeps.
func hookCopiesUp(store *volumes.Store, v *volumes.Volume, target string, knownEmpty bool, adopter *adopter, log *logrus.Entry) bool {
	if v.ClonePending != "" {
		// A clone that copies: the hook fills it from its source,
		// outside this request, before the container starts.
		return true
	}
	if v.Created {
		return !knownEmpty && !adopter.adopt(v, target)
	}
	st, err := store.CopyUps().Status(v.Namespace, v.Name)
	if err != nil {
		log.WithError(err).WithField("volume", v.Namespace+"/"+v.Name).Warn("cannot tell whether copy-up is needed; adding the hook")
		return true
	}
	if !st.Needed {
		return false
	}
	ownRoot := v.UID != nil || v.GID != nil || v.Mode != ""
	if knownEmpty && !st.CutShort && (ownRoot || st.RootDefault) {
		return false
	}
	return !adopter.adopt(v, target)
}

// imageDigestHex returns the hex of the container's image config digest, or
// "" when the runtime sent none (containerd before 2.4) or a malformed one.
func imageDigestHex(ctr *api.Container) string {
	h, err := volumes.ParseImageDigest(ctr.GetImage().GetConfigDigest())
	if err != nil {
		return ""
	}
	return h
}

// imageTargetEmpty reports whether an earlier container of the image
// (imageHex, "" when unknown) showed it has nothing to copy at target: image
// content is immutable per config digest, so the hook would copy nothing.
// The volume is left without a copy-up marker, so that a container of an
// image with content there still fills it, as Docker does. When the store
// cannot tell, the hook is added.
func imageTargetEmpty(store *volumes.Store, imageHex, target string, log *logrus.Entry) bool {
	if imageHex == "" {
		return false
	}
	empty, err := store.EmptyTargets().Has(imageHex, target)
	if err != nil {
		log.WithError(err).WithField("target", target).Warn("cannot tell whether the image has nothing to copy there; adding the hook")
		return false
	}
	return empty
}

// request gathers what the plan needs from the pod, the container and the image.
func (p *Plugin) request(cfg *config.Config, images *ImageVolumes, pod *api.PodSandbox, ctr *api.Container) (*CreateRequest, error) {
	ns := pod.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	if err := volumes.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("pod namespace %q: %w", ns, err)
	}
	req := &CreateRequest{
		Namespace: ns, PodName: pod.GetName(), PodSandboxID: pod.GetId(),
		ContainerID: ctr.GetId(), ContainerName: ctr.GetName(),
		ImageMode: cfg.ImageVolumes.Mode, Image: ctr.GetImage().GetName(), Mounts: ctr.GetMounts(),
	}
	req.UserNS, _ = userNamespace(ctr)
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

// RemoveContainer removes the container's pins and releases its volumes; if
// the store is busy, in the background (see retries).
func (p *Plugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	_, store, _ := p.state()
	name := containerName(pod, ctr)
	return p.remove(removal{what: "container " + name, run: func() error {
		if err := errors.Join(store.Pins().Remove(ctr.GetId()), store.Release(ctr.GetId())); err != nil {
			return fmt.Errorf("releasing the volumes of container %q: %w", ctr.GetName(), err)
		}
		p.log.WithField("container", name).Debug("released volumes")
		return nil
	}})
}

// RemovePodSandbox removes the pod's anonymous volumes, unless configured to
// keep them; if the store is busy, in the background (see retries).
func (p *Plugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	cfg, store, _ := p.state()
	log := p.log.WithField("pod", pod.GetNamespace()+"/"+pod.GetName())
	p.podMu.Lock()
	delete(p.podVolumes, pod.GetId())
	p.podMu.Unlock()
	return p.remove(removal{what: "pod " + pod.GetNamespace() + "/" + pod.GetName(), run: func() error {
		if err := store.PodBudgets().Forget(pod.GetId()); err != nil {
			if errors.Is(err, volumes.ErrBusy) {
				return err
			}
			log.WithError(err).Warn("cannot forget the pod's copy-up bytes")
		}
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
	}})
}

func containerName(pod *api.PodSandbox, ctr *api.Container) string {
	return pod.GetNamespace() + "/" + pod.GetName() + "/" + ctr.GetName()
}
