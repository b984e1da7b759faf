// Package config owns the plugin's configuration: its defaults, strict YAML
// loading (from a file or from containerd's Configure call) and validation.
// A Config is immutable once validated and safe to share between goroutines.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// ErrInvalid classifies every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// ImageVolumeMode says what an image VOLUME becomes.
type ImageVolumeMode string

// The image volume modes.
const (
	// ImageVolumeAnonymous makes an anonymous volume with copy-up.
	ImageVolumeAnonymous ImageVolumeMode = "volume"
	// ImageVolumeTmpfs makes a sized tmpfs that starts with the image's content.
	ImageVolumeTmpfs ImageVolumeMode = "tmpfs"
	// ImageVolumeIgnore makes nothing.
	ImageVolumeIgnore ImageVolumeMode = "ignore"
)

// ParseImageVolumeMode validates s as an image volume mode.
func ParseImageVolumeMode(s string) (ImageVolumeMode, error) {
	switch m := ImageVolumeMode(strings.TrimSpace(s)); m {
	case ImageVolumeAnonymous, ImageVolumeTmpfs, ImageVolumeIgnore:
		return m, nil
	}
	return "", fmt.Errorf("%w: image volume mode %q: want volume, tmpfs or ignore", ErrInvalid, s)
}

// Config is the plugin's configuration document.
type Config struct {
	// Root is the volume store.
	Root string `json:"root"`
	// ContainerdRoot is containerd's root; image configs are read from its content store.
	ContainerdRoot string `json:"containerdRoot"`
	// HookPath is nri-volumes-hook (or nri-volumes, which runs the same
	// hook) as the host sees it; runc runs it as the OCI hook.
	HookPath string `json:"hookPath"`
	// ImageVolumes says what an image VOLUME becomes and whether pods may
	// choose otherwise.
	ImageVolumes ImageVolumes `json:"imageVolumes"`
	// AnonymousVolumes configures anonymous volumes.
	AnonymousVolumes AnonymousVolumes `json:"anonymousVolumes"`
	// Tmpfs configures tmpfs mounts.
	Tmpfs Tmpfs `json:"tmpfs"`
	// BindMounts configures bind mounts from annotations.
	BindMounts BindMounts `json:"bindMounts"`
	// Sizes configures volumes with an enforced size.
	Sizes Sizes `json:"sizes"`
	// Limits bounds what one pod or image can make the plugin do.
	Limits Limits `json:"limits"`
	// Registries says how volume push and pull reach OCI registries.
	Registries Registries `json:"registries"`
	// LockTimeout bounds every wait for the volume store's lock inside an
	// NRI request; it must stay below containerd's plugin_request_timeout
	// (2s by default), past which containerd drops the plugin.
	LockTimeout Duration `json:"lockTimeout"`
}

// ImageVolumes is the imageVolumes setting. The document gives either the
// mode alone (`imageVolumes: tmpfs`; pods may override it) or a mapping
// (`imageVolumes: {mode: ignore, podOverride: false}`).
type ImageVolumes struct {
	// Mode is what an image VOLUME becomes.
	Mode ImageVolumeMode `json:"mode"`
	// PodOverride lets a pod choose another mode with the image-volumes
	// annotation; false refuses such a pod's containers.
	PodOverride bool `json:"podOverride"`
}

// UnmarshalJSON accepts the mode alone or the mapping; a key of the mapping
// other than mode and podOverride is an error naming it.
func (iv *ImageVolumes) UnmarshalJSON(b []byte) error {
	var mode string
	if err := json.Unmarshal(b, &mode); err == nil {
		*iv = ImageVolumes{Mode: ImageVolumeMode(mode), PodOverride: true}
		return nil
	}
	type plain ImageVolumes
	v := plain{Mode: ImageVolumeAnonymous, PodOverride: true}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return fmt.Errorf("imageVolumes.%s: want a %s, not a %s", typeErr.Field, typeErr.Type, typeErr.Value)
		}
		return fmt.Errorf("imageVolumes: %s: want a mode (volume, tmpfs or ignore) or a mapping with the keys mode and podOverride",
			strings.TrimPrefix(err.Error(), "json: "))
	}
	*iv = ImageVolumes(v)
	return nil
}

// Sizes configures volumes with an enforced size.
type Sizes struct {
	// Backend enforces sizes: auto or image (ext4 in a file on a loop
	// device, on any file system). btrfs is refused: a qgroup limit does not
	// hold against a pod that makes a subvolume inside its volume.
	Backend string `json:"backend"`
	// DefaultSize is the size of anonymous and image volumes that ask for
	// none; 0 leaves them unbounded.
	DefaultSize Size `json:"defaultSize"`
	// MaxSize is the largest size a request may ask for (default 1Ti); 0
	// means the ceiling, MaxVolumeSize. Making a volume formats it inside
	// the NRI request, in time that grows with its size.
	MaxSize Size `json:"maxSize"`
}

// MaxVolumeSize is the largest size any volume may have, whatever
// sizes.maxSize says: formatting a sparse ext4 image of 15Ti took 1.5 s on a
// 2-core VM, near containerd's 2 s request timeout.
const MaxVolumeSize Size = 16 << 40

// AnonymousVolumes configures anonymous volumes.
type AnonymousVolumes struct {
	// KeepAfterPod keeps a pod's anonymous volumes after the pod is removed, until pruned.
	KeepAfterPod bool `json:"keepAfterPod"`
}

// Tmpfs configures tmpfs mounts.
type Tmpfs struct {
	// DefaultSize is the size of a tmpfs that names none.
	DefaultSize Size `json:"defaultSize"`
	// MaxSize is the largest size an annotation may ask for.
	MaxSize Size `json:"maxSize"`
}

// BindMounts configures bind mounts from annotations.
type BindMounts struct {
	// AllowedHostPaths are the host path prefixes bind mounts may come from; empty allows none.
	AllowedHostPaths []string `json:"allowedHostPaths"`
	// ReadWrite lets bind mounts be writable; without it every bind mount is read-only.
	ReadWrite bool `json:"readWrite"`
}

// Limits bounds the resources one container or image can make the plugin use.
type Limits struct {
	// VolumesPerContainer caps the volumes of one container.
	VolumesPerContainer int `json:"volumesPerContainer"`
	// VolumesPerPod caps the distinct volumes the containers of one pod use.
	VolumesPerPod int `json:"volumesPerPod"`
	// CopyUpMaxSize caps how much data copy-up copies from an image into one volume.
	CopyUpMaxSize Size `json:"copyUpMaxSize"`
	// CopyUpMaxFiles caps how many files copy-up copies into one volume.
	CopyUpMaxFiles int64 `json:"copyUpMaxFiles"`
	// CopyUpMaxSizePerPod caps how much data the copy-ups of all the
	// containers of one pod sandbox copy in all; 0 sets no cap.
	CopyUpMaxSizePerPod Size `json:"copyUpMaxSizePerPod"`
	// NamespaceBytes caps the sum of the sizes of one namespace's volumes
	// on the node; 0: no cap. Unsized volumes count for nothing.
	NamespaceBytes Size `json:"namespaceBytes"`
	// Overcommit caps the sum of the sizes of every volume of the node at
	// this multiple of the size of the store's file system; 0: no cap. A
	// sized volume reserves no space (a sparse image, a qgroup), so without
	// a cap the sizes promise more than the disk holds. The default, 1,
	// never promises more.
	Overcommit float64 `json:"overcommit"`
}

// Default returns the configuration used when no file is given.
func Default() *Config {
	return &Config{
		Root:           "/var/lib/nri-volumes",
		ContainerdRoot: "/var/lib/containerd",
		HookPath:       "/usr/local/bin/nri-volumes-hook",
		ImageVolumes:   ImageVolumes{Mode: ImageVolumeAnonymous, PodOverride: true},
		Tmpfs: Tmpfs{
			DefaultSize: 64 << 20,
			MaxSize:     1 << 30,
		},
		BindMounts: BindMounts{AllowedHostPaths: []string{}},
		Sizes:      Sizes{Backend: "auto", MaxSize: 1 << 40},
		Limits: Limits{
			VolumesPerContainer: 64,
			VolumesPerPod:       256,
			CopyUpMaxSize:       10 << 30,
			CopyUpMaxFiles:      1_000_000,
			CopyUpMaxSizePerPod: 20 << 30,
			Overcommit:          1,
		},
		Registries:  Registries{BlobCacheBytes: DefaultBlobCacheBytes},
		LockTimeout: Duration(1500 * time.Millisecond),
	}
}

// maxDocument bounds a configuration document.
const maxDocument = 1 << 20

// Parse reads a YAML (or JSON) document over the defaults. Unknown keys and bad
// values are errors that name them. An empty document gives the defaults.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	if len(data) > maxDocument {
		return nil, fmt.Errorf("%w: document is larger than %d bytes", ErrInvalid, maxDocument)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.UnmarshalStrict(data, cfg); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "error unmarshaling JSON: while decoding JSON: "))
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Load reads the configuration file at path. An empty path gives the defaults.
func Load(path string) (*Config, error) {
	if path == "" {
		cfg := Default()
		return cfg, cfg.Validate()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("configuration %q: %w", path, err)
	}
	return cfg, nil
}

// Validate checks every field and normalises paths.
func (c *Config) Validate() error {
	for _, p := range []struct {
		key string
		val *string
	}{{"root", &c.Root}, {"containerdRoot", &c.ContainerdRoot}, {"hookPath", &c.HookPath}} {
		if !filepath.IsAbs(*p.val) {
			return fmt.Errorf("%w: %s: %q is not an absolute path", ErrInvalid, p.key, *p.val)
		}
		*p.val = filepath.Clean(*p.val)
	}
	if c.Root == "/" {
		return fmt.Errorf("%w: root: the store cannot be /", ErrInvalid)
	}
	if err := c.Registries.validate(); err != nil {
		return err
	}
	if _, err := ParseImageVolumeMode(string(c.ImageVolumes.Mode)); err != nil {
		return fmt.Errorf("imageVolumes: %w", err)
	}
	if c.Tmpfs.DefaultSize <= 0 {
		return fmt.Errorf("%w: tmpfs.defaultSize must be positive", ErrInvalid)
	}
	if c.Tmpfs.MaxSize <= 0 {
		return fmt.Errorf("%w: tmpfs.maxSize must be positive", ErrInvalid)
	}
	if c.Tmpfs.DefaultSize > c.Tmpfs.MaxSize {
		return fmt.Errorf("%w: tmpfs.defaultSize %s is above tmpfs.maxSize %s", ErrInvalid, c.Tmpfs.DefaultSize, c.Tmpfs.MaxSize)
	}
	for i, p := range c.BindMounts.AllowedHostPaths {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%w: bindMounts.allowedHostPaths[%d]: %q is not an absolute path", ErrInvalid, i, p)
		}
		c.BindMounts.AllowedHostPaths[i] = filepath.Clean(p)
	}
	if c.Limits.VolumesPerContainer <= 0 {
		return fmt.Errorf("%w: limits.volumesPerContainer must be positive", ErrInvalid)
	}
	if c.Limits.VolumesPerPod < c.Limits.VolumesPerContainer {
		return fmt.Errorf("%w: limits.volumesPerPod must be at least limits.volumesPerContainer", ErrInvalid)
	}
	if c.Limits.CopyUpMaxSize < 0 || c.Limits.CopyUpMaxFiles < 0 {
		return fmt.Errorf("%w: limits.copyUpMaxSize and limits.copyUpMaxFiles cannot be negative", ErrInvalid)
	}
	if c.Limits.CopyUpMaxSizePerPod < 0 {
		return fmt.Errorf("%w: limits.copyUpMaxSizePerPod cannot be negative", ErrInvalid)
	}
	if c.Limits.Overcommit < 0 || c.Limits.Overcommit > 1e6 || math.IsNaN(c.Limits.Overcommit) {
		return fmt.Errorf("%w: limits.overcommit %g: want a multiple of the store file system's size from 0 (no cap) to 1000000", ErrInvalid, c.Limits.Overcommit)
	}
	if c.LockTimeout <= 0 || time.Duration(c.LockTimeout) > time.Minute {
		return fmt.Errorf("%w: lockTimeout %s: want a duration above 0 and at most 1m, below containerd's plugin_request_timeout", ErrInvalid, c.LockTimeout)
	}
	return c.Sizes.validate(c.Limits.NamespaceBytes)
}

func (z *Sizes) validate(namespaceBytes Size) error {
	switch z.Backend {
	case "":
		z.Backend = "auto"
	case "auto", "image":
	case "btrfs":
		return fmt.Errorf("%w: sizes.backend: %q: a btrfs qgroup limit does not hold against a pod that makes a subvolume inside its volume; "+
			"want auto or image (ext4 in a file on a loop device, which works on btrfs too)", ErrInvalid, z.Backend)
	default:
		return fmt.Errorf("%w: sizes.backend: %q: want auto or image", ErrInvalid, z.Backend)
	}
	if z.DefaultSize < 0 || z.MaxSize < 0 || namespaceBytes < 0 {
		return fmt.Errorf("%w: sizes.defaultSize, sizes.maxSize and limits.namespaceBytes cannot be negative", ErrInvalid)
	}
	if z.MaxSize > MaxVolumeSize {
		return fmt.Errorf("%w: sizes.maxSize %s is above the ceiling of %s", ErrInvalid, z.MaxSize, MaxVolumeSize)
	}
	if z.MaxSize == 0 {
		z.MaxSize = MaxVolumeSize
	}
	if z.DefaultSize > z.MaxSize {
		return fmt.Errorf("%w: sizes.defaultSize %s is above sizes.maxSize %s", ErrInvalid, z.DefaultSize, z.MaxSize)
	}
	return nil
}

// Size is a byte count written like Kubernetes quantities: 64Mi, 1Gi, 512k, 1048576.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1000}, {"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000}, {"T", 1000 * 1000 * 1000 * 1000},
}

// ParseSize parses a size such as 64Mi. Fractions, signs and anything but
// digits followed by one known unit are refused, so a value can never smuggle
// extra mount options.
func ParseSize(s string) (Size, error) {
	num, mult := s, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return 0, fmt.Errorf("%w: size %q: want a whole number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T)", ErrInvalid, s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, fmt.Errorf("%w: size %q is too large", ErrInvalid, s)
	}
	return Size(n * mult), nil
}

// String formats the size with the largest binary unit that divides it.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalJSON accepts a quoted size string or a plain number of bytes.
func (s *Size) UnmarshalJSON(b []byte) error {
	str := strings.Trim(string(b), `"`)
	v, err := ParseSize(str)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalJSON writes the size as a string such as "64Mi".
func (s Size) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(s.String())), nil
}

// Duration is a time span written as Go writes it: 1500ms, 1.5s, 2m.
type Duration time.Duration

// String formats the duration as Go does.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalJSON accepts a quoted duration such as "1500ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("duration %s: want a string with a unit, such as 1500ms or 1.5s", b)
	}
	v, err := time.ParseDuration(str)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, such as 1500ms or 1.5s", str)
	}
	*d = Duration(v)
	return nil
}
