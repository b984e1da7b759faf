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

// Request is what the plan needs to know about one container being created.
type Request struct {
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
}

// PlannedMount is one mount to add.
type PlannedMount struct {
	Kind   Kind
	Target string
	// Volume indexes Plan.Volumes for KindVolume.
	Volume int
	// Source is the resolved host path of a bind mount.
	Source  string
	Options []string
	// CopyUp asks for the image's content at Target to be copied into the volume.
	CopyUp bool
}

// Resolver resolves a host path's symlinks; filepath.EvalSymlinks in production.
type Resolver func(string) (string, error)

// deniedHostPaths are never bind-mounted, whatever the allowlist says: the
// kernel's filesystems, the host's configuration and the container runtime's
// state and sockets.
var deniedHostPaths = []string{
	"/proc", "/sys", "/dev", "/etc", "/boot",
	"/run/containerd", "/var/run/containerd", "/run/nri", "/var/run/nri",
	"/var/lib/kubelet", "/run/crio", "/var/lib/containers",
}

// MakePlan turns a request into a plan. It touches no file but through resolve,
// which checks bind sources.
func MakePlan(cfg *config.Config, req *Request, resolve Resolver) (*Plan, error) {
	p := &Plan{}
	runtimeTargets := map[string]bool{}
	for _, m := range req.Mounts {
		dst := filepath.Clean(m.Destination)
		if isRuntimeImageVolume(m, req.ContainerID) {
			p.Remove = append(p.Remove, m.Destination)
			continue
		}
		runtimeTargets[dst] = true
	}
	if n := len(req.Items) + len(req.ImageVolumes); n > cfg.Limits.VolumesPerContainer {
		return nil, fmt.Errorf("%w %s: %d volumes for container %q, more than the %d allowed (limits.volumesPerContainer)",
			ErrInvalid, req.ItemsKey, n, req.ContainerName, cfg.Limits.VolumesPerContainer)
	}

	named := map[string]int{}
	addVolume := func(r volumes.Request) int {
		if r.Name != "" {
			if i, ok := named[r.Name]; ok {
				return i
			}
			named[r.Name] = len(p.Volumes)
		}
		p.Volumes = append(p.Volumes, r)
		return len(p.Volumes) - 1
	}

	taken := map[string]bool{}
	for _, it := range req.Items {
		if runtimeTargets[it.Target] {
			return nil, fmt.Errorf("%w %s: item %s: target %q is already mounted by the container's runtime configuration",
				ErrInvalid, req.ItemsKey, it.Desc, it.Target)
		}
		taken[it.Target] = true
		m := PlannedMount{Kind: it.Kind, Target: it.Target}
		switch it.Kind {
		case KindVolume:
			r := volumes.Request{Namespace: req.Namespace, Name: it.Source, CreateOptions: volumes.CreateOptions{Labels: it.Labels, Size: int64(it.Size)}}
			if it.Source == "" {
				r.Owner = req.owner(it.Target)
				if r.Size == 0 {
					r.Size = int64(cfg.Sizes.DefaultSize)
				}
			}
			if max := cfg.Sizes.MaxSize; max > 0 && it.Size > max {
				return nil, fmt.Errorf("%w %s: item %s: size %s is above sizes.maxSize %s",
					ErrInvalid, req.ItemsKey, it.Desc, it.Size, max)
			}
			m.Volume = addVolume(r)
			m.Options = volumeOptions(it.ReadOnly)
			m.CopyUp = !it.NoCopy
		case KindBind:
			src, err := checkBindSource(cfg, it.Source, resolve)
			if err != nil {
				return nil, fmt.Errorf("%w %s: item %s: %w", ErrInvalid, req.ItemsKey, it.Desc, err)
			}
			m.Source = src
			m.Options = bindOptions(it.ReadOnly || !cfg.BindMounts.ReadWrite)
		case KindTmpfs:
			m.Options = tmpfsOptions(it.Size, it.Mode, it.ReadOnly)
		}
		p.Mounts = append(p.Mounts, m)
	}

	if req.ImageMode != config.ImageVolumeIgnore {
		for _, v := range req.ImageVolumes {
			target, err := cleanTarget(v)
			if err != nil {
				return nil, fmt.Errorf("%w: image %q declares VOLUME %q: %w", ErrInvalid, req.Image, v, err)
			}
			if taken[target] || runtimeTargets[target] {
				continue
			}
			taken[target] = true
			m := PlannedMount{Target: target}
			if req.ImageMode == config.ImageVolumeTmpfs {
				m.Kind = KindTmpfs
				m.Options = append(tmpfsOptions(cfg.Tmpfs.DefaultSize, 0o1777, false), "tmpcopyup")
			} else {
				m.Kind = KindVolume
				m.Volume = addVolume(volumes.Request{Namespace: req.Namespace, Owner: req.owner(target),
					CreateOptions: volumes.CreateOptions{Size: int64(cfg.Sizes.DefaultSize)}})
				m.Options = volumeOptions(false)
				m.CopyUp = true
			}
			p.Mounts = append(p.Mounts, m)
		}
	}
	sort.SliceStable(p.Mounts, func(i, j int) bool {
		return strings.Count(p.Mounts[i].Target, "/") < strings.Count(p.Mounts[j].Target, "/")
	})
	return p, nil
}

func (req *Request) owner(target string) *volumes.Owner {
	return &volumes.Owner{PodSandboxID: req.PodSandboxID, PodName: req.PodName, Container: req.ContainerName, Target: target}
}

// isRuntimeImageVolume tells containerd's own image-volume mounts, whose
// sources it makes under the container's CRI state directory, from mounts the
// CRI request asked for.
func isRuntimeImageVolume(m *api.Mount, containerID string) bool {
	return containerID != "" && strings.Contains(m.Source, "/io.containerd.grpc.v1.cri/containers/"+containerID+"/volumes/")
}

func volumeOptions(ro bool) []string {
	return []string{"rbind", "rprivate", "nosuid", "nodev", rwOption(ro)}
}

func bindOptions(ro bool) []string {
	return []string{"rbind", "rprivate", "nosuid", "nodev", rwOption(ro)}
}

// tmpfsOptions always sets a size and an inode cap, so a tmpfs never grows to
// half the host's memory.
func tmpfsOptions(size config.Size, mode uint32, ro bool) []string {
	inodes := int64(size) / 4096
	if inodes < 1024 {
		inodes = 1024
	}
	return []string{"nosuid", "nodev", "mode=" + strconv.FormatUint(uint64(mode), 8),
		"size=" + strconv.FormatInt(int64(size), 10), "nr_inodes=" + strconv.FormatInt(inodes, 10), rwOption(ro)}
}

func rwOption(ro bool) string {
	if ro {
		return "ro"
	}
	return "rw"
}

// checkBindSource resolves a bind source and checks it against the allowlist
// and the paths that are never allowed. It returns the resolved path, which
// is what gets mounted.
func checkBindSource(cfg *config.Config, src string, resolve Resolver) (string, error) {
	if len(cfg.BindMounts.AllowedHostPaths) == 0 {
		return "", errors.New("bind mounts are not allowed (bindMounts.allowedHostPaths is empty)")
	}
	resolved, err := resolve(src)
	if err != nil {
		return "", fmt.Errorf("bind source %q: %w", src, err)
	}
	allowed := false
	for _, a := range cfg.BindMounts.AllowedHostPaths {
		ra, err := resolve(a)
		if err != nil {
			continue
		}
		if within(resolved, ra) {
			allowed = true
			break
		}
	}
	if !allowed {
		return "", fmt.Errorf("bind source %q (resolved to %q) is outside bindMounts.allowedHostPaths", src, resolved)
	}
	if resolved == "/" {
		return "", fmt.Errorf("bind source %q resolves to /", src)
	}
	denied := append([]string{cfg.Root, cfg.ContainerdRoot}, deniedHostPaths...)
	for _, d := range denied {
		if within(resolved, d) || within(d, resolved) {
			return "", fmt.Errorf("bind source %q (resolved to %q) covers %s, which is never allowed", src, resolved, d)
		}
	}
	return resolved, nil
}

// within reports whether p is dir or below it; both are clean absolute paths.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}
