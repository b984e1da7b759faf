package plugin

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/nri/pkg/api"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// CreateRequest is what the plan needs to know about one container being
// created: NRI's CreateContainer, read once. It is not a volumes.Request,
// which is one volume a container wants; a plan turns one of these into
// many of those.
type CreateRequest struct {
	Namespace     string
	PodName       string
	PodSandboxID  string
	ContainerID   string
	ContainerName string
	// Items are the annotation's volumes; ItemsKey is the annotation they came from.
	Items    []Item
	ItemsKey string
	// ImageVolumes are the targets the image declares with VOLUME; Image names it.
	ImageVolumes []string
	Image        string
	// ImageMode is what image volumes become.
	ImageMode config.ImageVolumeMode
	// Mounts are the container's mounts as the runtime made them.
	Mounts []*api.Mount
	// UserNS says the container has a user namespace: every volume and bind
	// mount is then an idmapped mount of the container's own mappings.
	UserNS bool
}

// Plan is what the plugin will do for one container.
type Plan struct {
	// Volumes are acquired from the store, all or nothing.
	Volumes []volumes.Request
	// Mounts are added to the container, parents before children.
	Mounts []PlannedMount
	// Remove are destinations of runtime mounts to drop: containerd's own
	// image-volume directories, which the plugin replaces.
	Remove []string
	// Seeds are the volumes, by index in Volumes, made from a registry on
	// first use (see seed.go).
	Seeds map[int]*Seed
}

// PlannedMount is one mount to add.
type PlannedMount struct {
	Kind   Kind
	Target string
	// Volume indexes Plan.Volumes for KindVolume.
	Volume int
	// Subpath is the directory inside the volume that is mounted, if any.
	Subpath string
	// Source is the host path of a bind mount, as the annotation gave it;
	// it is checked and pinned when the container is created (openBindSource).
	Source  string
	Options []string
	// CopyUp asks for the image's content at Target to be copied into the volume.
	CopyUp bool
	// Chown asks for the volume's root to be given to the container's user,
	// once (option U).
	Chown bool
	// Item names the annotation item the mount comes from, for messages;
	// empty for an image volume.
	Item string
}

// MakePlan turns a request into a plan. It touches no file: bind sources
// and subpaths are checked when they are opened and pinned.
func MakePlan(cfg *config.Config, req *CreateRequest) (*Plan, error) {
	pl := planner{cfg: cfg, req: req, p: &Plan{}, named: map[string]int{}, taken: map[string]bool{}, runtime: map[string]bool{}}
	for _, m := range req.Mounts {
		if isRuntimeImageVolume(m, req.ContainerID) {
			pl.p.Remove = append(pl.p.Remove, m.Destination)
			continue
		}
		pl.runtime[filepath.Clean(m.Destination)] = true
	}
	if n := len(req.Items) + len(req.ImageVolumes); n > cfg.Limits.VolumesPerContainer {
		return nil, fmt.Errorf("%w %s: %d volumes for container %q, more than the %d allowed (limits.volumesPerContainer)",
			ErrInvalid, req.ItemsKey, n, req.ContainerName, cfg.Limits.VolumesPerContainer)
	}
	for _, it := range req.Items {
		m, err := pl.item(it)
		if err != nil {
			return nil, err
		}
		pl.p.Mounts = append(pl.p.Mounts, m)
	}
	if req.ImageMode != config.ImageVolumeIgnore {
		for _, v := range req.ImageVolumes {
			target, err := cleanTarget(v)
			if err != nil {
				return nil, fmt.Errorf("%w: image %q declares VOLUME %q: %w", ErrInvalid, req.Image, v, err)
			}
			// The annotation's items and the runtime's own mounts win.
			if pl.taken[target] || pl.runtime[target] {
				continue
			}
			pl.taken[target] = true
			pl.p.Mounts = append(pl.p.Mounts, pl.imageVolume(target))
		}
	}
	sort.SliceStable(pl.p.Mounts, func(i, j int) bool {
		return strings.Count(pl.p.Mounts[i].Target, "/") < strings.Count(pl.p.Mounts[j].Target, "/")
	})
	return pl.p, nil
}

// planner is MakePlan's state while it goes through one request.
type planner struct {
	cfg *config.Config
	req *CreateRequest
	p   *Plan
	// named maps a named volume to its index in p.Volumes: two items of
	// one name share one volume.
	named map[string]int
	// taken holds the targets of the annotation's items; runtime those of
	// the runtime's own mounts.
	taken, runtime map[string]bool
}

// addVolume adds r to the plan's volumes, once per name, and returns its index.
func (pl *planner) addVolume(r volumes.Request) int {
	if r.Name != "" {
		if i, ok := pl.named[r.Name]; ok {
			return i
		}
		pl.named[r.Name] = len(pl.p.Volumes)
	}
	pl.p.Volumes = append(pl.p.Volumes, r)
	return len(pl.p.Volumes) - 1
}

// item plans the mount of one annotation item.
func (pl *planner) item(it Item) (PlannedMount, error) {
	cfg, req := pl.cfg, pl.req
	if pl.runtime[it.Target] {
		return PlannedMount{}, fmt.Errorf("%w %s: item %s: target %q is already mounted by the container's runtime configuration",
			ErrInvalid, req.ItemsKey, it.Desc, it.Target)
	}
	pl.taken[it.Target] = true
	m := PlannedMount{Kind: it.Kind, Target: it.Target, Item: it.Desc}
	switch it.Kind {
	case KindVolume:
		if err := checkPullPolicy(cfg, req, it); err != nil {
			return PlannedMount{}, err
		}
		r := volumes.Request{Namespace: req.Namespace, Name: it.Source, CreateOptions: volumes.CreateOptions{
			Labels: it.Labels, Size: int64(it.Size), UID: it.UID, GID: it.GID, Mode: it.DataMode,
			CloneOf: it.CloneOf,
		}, MustExist: it.External && it.From == nil}
		if it.Source == "" {
			r.Owner = req.owner(it.Target)
			if r.Size == 0 && it.CloneOf == nil {
				r.Size = int64(cfg.Sizes.DefaultSize)
			}
		}
		if max := cfg.Sizes.MaxSize; max > 0 && it.Size > max {
			return PlannedMount{}, fmt.Errorf("%w %s: item %s: size %s is above sizes.maxSize %s",
				ErrInvalid, req.ItemsKey, it.Desc, it.Size, max)
		}
		m.Volume = pl.addVolume(r)
		m.Options = volumeOptions(it.ReadOnly, it.NoExec, req.UserNS)
		// A subpath of a volume is a directory that is already there;
		// copy-up fills a whole new volume only.
		m.Subpath = it.Subpath
		// A clone holds its source's data, never the image's.
		m.CopyUp = !it.NoCopy && it.Subpath == "" && it.CloneOf == nil && it.From == nil
		m.Chown = it.Chown
		if it.From != nil {
			if pl.p.Seeds == nil {
				pl.p.Seeds = map[int]*Seed{}
			}
			if _, ok := pl.p.Seeds[m.Volume]; !ok {
				pl.p.Seeds[m.Volume] = it.From
			}
		}
	case KindBind:
		if len(cfg.BindMounts.AllowedHostPaths) == 0 {
			return PlannedMount{}, fmt.Errorf("%w %s: item %s: bind mounts are not allowed (bindMounts.allowedHostPaths is empty)",
				ErrInvalid, req.ItemsKey, it.Desc)
		}
		m.Source = it.Source
		m.Options = bindOptions(it.ReadOnly || !cfg.BindMounts.ReadWrite, it.NoExec, req.UserNS)
	case KindTmpfs:
		m.Options = tmpfsOptions(it.Size, it.Mode, it.ReadOnly, it.NoExec)
	}
	return m, nil
}

// imageVolume plans the mount of a VOLUME the image declares at target:
// an anonymous volume copied up from the image, or a tmpfs.
func (pl *planner) imageVolume(target string) PlannedMount {
	m := PlannedMount{Target: target}
	if pl.req.ImageMode == config.ImageVolumeTmpfs {
		m.Kind = KindTmpfs
		m.Options = append(tmpfsOptions(pl.cfg.Tmpfs.DefaultSize, 0o1777, false, false), "tmpcopyup")
		return m
	}
	m.Kind = KindVolume
	m.Volume = pl.addVolume(volumes.Request{Namespace: pl.req.Namespace, Owner: pl.req.owner(target),
		CreateOptions: volumes.CreateOptions{Size: int64(pl.cfg.Sizes.DefaultSize)}})
	m.Options = volumeOptions(false, false, pl.req.UserNS)
	m.CopyUp = true
	return m
}

// subpaths lists the subpath mounts of the plan for the store to pin.
func (p *Plan) subpaths() []volumes.Subpath {
	var subs []volumes.Subpath
	for i, m := range p.Mounts {
		if m.Kind == KindVolume && m.Subpath != "" {
			v := p.Volumes[m.Volume]
			subs = append(subs, volumes.Subpath{Namespace: v.Namespace, Name: v.Name, Path: m.Subpath, Pin: i})
		}
	}
	return subs
}

func (req *CreateRequest) owner(target string) *volumes.Owner {
	return &volumes.Owner{PodSandboxID: req.PodSandboxID, PodName: req.PodName, Container: req.ContainerName, Target: target}
}

// isRuntimeImageVolume tells containerd's own image-volume mounts, whose
// sources it makes under the container's CRI state directory, from mounts the
// CRI request asked for.
func isRuntimeImageVolume(m *api.Mount, containerID string) bool {
	return containerID != "" && strings.Contains(m.Source, "/io.containerd.grpc.v1.cri/containers/"+containerID+"/volumes/")
}

// volumeOptions are the options of a volume's bind mount. A read-only one is
// read-only all the way down ("rro": runc applies mount_setattr with
// AT_RECURSIVE), not only at its top: "ro" alone leaves every mount below
// writable. In a container with a user namespace it is idmapped with the
// container's own mappings (runc fills them in for "ridmap"), so the data on
// disk holds the ids the container sees and containers with other mappings,
// or none, share it. The mapping is recursive, as the bind is: a mount below
// the source (a sized volume's file system, a host path's submount) is mapped
// the same way rather than showing its files as nobody's.
func volumeOptions(ro, noexec, userns bool) []string {
	return mountOptions([]string{"rbind", "rprivate", "nosuid", "nodev"}, ro, noexec, userns)
}

// bindOptions are the options of a host path's bind mount: nosuid and nodev
// hold for every mount below the source too ("rnosuid", "rnodev"), whatever
// flags the host gave those mounts; read-only is recursive and the mount is
// idmapped like a volume's, so the container sees the host's owners.
func bindOptions(ro, noexec, userns bool) []string {
	return mountOptions([]string{"rbind", "rprivate", "nosuid", "nodev", "rnosuid", "rnodev"}, ro, noexec, userns)
}

func mountOptions(opts []string, ro, noexec, userns bool) []string {
	if ro {
		opts = append(opts, "ro", "rro")
	} else {
		opts = append(opts, "rw")
	}
	if noexec {
		opts = append(opts, "noexec")
	}
	if userns {
		opts = append(opts, "ridmap")
	}
	return opts
}

// tmpfsOptions always sets a size and an inode cap, so a tmpfs never grows to
// half the host's memory. A tmpfs is made inside the container's user
// namespace, so it needs no id mapping.
func tmpfsOptions(size config.Size, mode uint32, ro, noexec bool) []string {
	inodes := int64(size) / 4096
	if inodes < 1024 {
		inodes = 1024
	}
	opts := []string{"nosuid", "nodev", "mode=" + strconv.FormatUint(uint64(mode), 8),
		"size=" + strconv.FormatInt(int64(size), 10), "nr_inodes=" + strconv.FormatInt(inodes, 10), rwOption(ro)}
	if noexec {
		opts = append(opts, "noexec")
	}
	return opts
}

func rwOption(ro bool) string {
	if ro {
		return "ro"
	}
	return "rw"
}

// externalItem finds the item of the external volume that err, from the
// store, says is missing, so the message names the item as well.
func (p *Plan) externalItem(err error) (string, bool) {
	var op *volumes.OpError
	if !errors.Is(err, volumes.ErrNotFound) || !errors.As(err, &op) {
		return "", false
	}
	for _, m := range p.Mounts {
		if m.Kind != KindVolume {
			continue
		}
		if r := p.Volumes[m.Volume]; r.MustExist && r.Namespace == op.Namespace && r.Name == op.Name {
			return m.Item, true
		}
	}
	return "", false
}

// itemOf names the annotation item of the plan's volume ns/name, for
// messages; an image volume has none.
func (p *Plan) itemOf(ns, name string) string {
	for _, m := range p.Mounts {
		if m.Kind != KindVolume {
			continue
		}
		if r := p.Volumes[m.Volume]; r.Namespace == ns && volumeName(r) == name {
			if m.Item == "" {
				return "image VOLUME " + m.Target
			}
			return m.Item
		}
	}
	return name
}

// volumeName is the name of the volume r asks for, anonymous or named.
func volumeName(r volumes.Request) string {
	if r.Name == "" && r.Owner != nil {
		return volumes.AnonymousName(*r.Owner)
	}
	return r.Name
}
