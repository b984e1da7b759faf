package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/labels"
	"github.com/nri-volumes/nri-volumes/volumes"
	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Annotation keys. Each takes the NRI scoping suffixes /container.NAME and /pod.
const (
	// VolumesKey holds a YAML list of volumes.
	VolumesKey = "volumes.noderesource.dev"
	// ImageVolumesKey overrides the imageVolumes mode.
	ImageVolumesKey = "image-volumes.noderesource.dev"
)

// ErrInvalid classifies bad annotations.
var ErrInvalid = errors.New("invalid annotation")

// Limits on annotation documents, so a hostile pod cannot make the plugin
// spend memory or time parsing.
const (
	maxAnnotationBytes = 64 << 10
	maxItems           = 256
	maxYAMLDepth       = 8
)

// Kind is the kind of one mount.
type Kind string

// The mount kinds.
const (
	KindVolume Kind = "volume"
	KindBind   Kind = "bind"
	KindTmpfs  Kind = "tmpfs"
)

// Item is one validated mount a container asked for.
type Item struct {
	Kind Kind
	// Source is the volume name (empty for an anonymous volume) or the bind's host path.
	Source string
	// Target is a clean absolute path inside the container.
	Target   string
	ReadOnly bool
	NoCopy   bool
	// Size is the tmpfs size, or the enforced size of a volume; zero means
	// the configured default.
	Size config.Size
	// Mode is the tmpfs mode; zero means 1777.
	Mode uint32
	// Labels label a named volume created on first use.
	Labels map[string]string
	// UID, GID and DataMode are the owner and mode of the root of a volume
	// created on first use; nil leaves the default (root, 0755).
	UID, GID *int
	DataMode *uint32
	// Chown gives the volume's root to the container's user on its first
	// mount (short option U, long chown: true).
	Chown bool
	// NoExec mounts it noexec (short option noexec, long noExec: true).
	NoExec bool
	// Subpath is a directory inside a named volume to mount instead of the
	// whole volume: clean, relative, without "..".
	Subpath string
	// External says the named volume must exist: a missing one fails the
	// container instead of being made empty (long syntax external: true).
	External bool
	// CloneOf makes a volume created on first use as a clone of a volume
	// of the pod's namespace, or of a snapshot of one (long cloneOf:
	// NAME[@SNAP]).
	CloneOf *volumes.CloneSource
	// From seeds a volume made on first use from a registry (long syntax
	// from: REF, fromPath: /path); nil: made empty. See seed.go.
	From *Seed
	// Desc names the item in error messages.
	Desc string
}

// longItem is the compose-like long syntax.
type longItem struct {
	Type     string            `json:"type"`
	Source   string            `json:"source"`
	Target   string            `json:"target"`
	ReadOnly bool              `json:"readOnly"`
	NoCopy   bool              `json:"noCopy"`
	Size     json.RawMessage   `json:"size"`
	Mode     json.RawMessage   `json:"mode"`
	Labels   map[string]string `json:"labels"`
	UID      *int              `json:"uid"`
	GID      *int              `json:"gid"`
	Chown    bool              `json:"chown"`
	NoExec   bool              `json:"noExec"`
	Subpath  string            `json:"subpath"`
	External bool              `json:"external"`
	CloneOf  string            `json:"cloneOf"`
	From     string            `json:"from"`
	FromPath string            `json:"fromPath"`
}

// ParseVolumes parses the value of a volumes annotation found under key. The
// error names the key, the item and the reason.
func ParseVolumes(key, value string, limits config.Tmpfs) ([]Item, error) {
	fail := func(item string, format string, args ...any) error {
		if item == "" {
			return fmt.Errorf("%w %s: %s", ErrInvalid, key, fmt.Sprintf(format, args...))
		}
		return fmt.Errorf("%w %s: item %s: %s", ErrInvalid, key, item, fmt.Sprintf(format, args...))
	}
	if len(value) > maxAnnotationBytes {
		return nil, fail("", "value is %d bytes, more than the %d allowed", len(value), maxAnnotationBytes)
	}
	if strings.ContainsRune(value, 0) {
		return nil, fail("", "value contains a NUL byte")
	}
	if err := checkYAMLShape(value); err != nil {
		return nil, fail("", "%s", err.Error())
	}
	doc, err := yaml.YAMLToJSONStrict([]byte(value))
	if err != nil {
		return nil, fail("", "not a YAML list: %s", yamlError(err))
	}
	if len(bytes.TrimSpace(doc)) == 0 || string(bytes.TrimSpace(doc)) == "null" {
		return nil, nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(doc, &raw); err != nil {
		return nil, fail("", "not a YAML list of volumes")
	}
	if len(raw) > maxItems {
		return nil, fail("", "%d items, more than the %d allowed", len(raw), maxItems)
	}
	items := make([]Item, 0, len(raw))
	targets := make(map[string]string, len(raw))
	for i, r := range raw {
		var (
			it   Item
			desc string
		)
		var short string
		if err := json.Unmarshal(r, &short); err == nil {
			desc = fmt.Sprintf("%d (%q)", i+1, short)
			it, err = parseShort(short)
			if err != nil {
				return nil, fail(desc, "%s", err.Error())
			}
		} else {
			var long longItem
			dec := json.NewDecoder(bytes.NewReader(r))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&long); err != nil {
				return nil, fail(fmt.Sprintf("%d", i+1), "not a string or a volume mapping: %s", strings.TrimPrefix(err.Error(), "json: "))
			}
			desc = fmt.Sprintf("%d (target %q)", i+1, long.Target)
			it, err = parseLong(long, limits)
			if err != nil {
				return nil, fail(desc, "%s", err.Error())
			}
		}
		it.Desc = desc
		if prev, dup := targets[it.Target]; dup {
			return nil, fail(desc, "target %q is already used by item %s", it.Target, prev)
		}
		targets[it.Target] = desc
		items = append(items, it)
	}
	return items, nil
}

// parseShort parses the docker run -v syntax: [SOURCE:]TARGET[:OPTS].
func parseShort(s string) (Item, error) {
	parts := strings.Split(s, ":")
	var src, target, opts string
	switch len(parts) {
	case 1:
		target = parts[0]
	case 2:
		if isOptionList(parts[1]) {
			target, opts = parts[0], parts[1]
		} else {
			src, target = parts[0], parts[1]
		}
	case 3:
		src, target, opts = parts[0], parts[1], parts[2]
	default:
		return Item{}, errors.New("want [SOURCE:]TARGET[:OPTIONS]")
	}
	it := Item{Kind: KindVolume, Source: src}
	if strings.HasPrefix(src, "/") {
		it.Kind = KindBind
	}
	if opts != "" || len(parts) == 3 {
		seen := map[string]bool{}
		for _, o := range strings.Split(opts, ",") {
			if seen[o] {
				return Item{}, fmt.Errorf("option %q given twice", o)
			}
			seen[o] = true
			switch o {
			case "ro":
				it.ReadOnly = true
			case "rw", "exec":
			case "nocopy":
				it.NoCopy = true
			case "U":
				it.Chown = true
			case "noexec":
				it.NoExec = true
			default:
				return Item{}, fmt.Errorf("unknown option %q: want ro, rw, nocopy, U, noexec or exec", o)
			}
		}
		for _, pair := range [][2]string{{"ro", "rw"}, {"noexec", "exec"}} {
			if seen[pair[0]] && seen[pair[1]] {
				return Item{}, fmt.Errorf("options %s and %s contradict each other", pair[0], pair[1])
			}
		}
	}
	var err error
	if it.Target, err = cleanTarget(target); err != nil {
		return Item{}, err
	}
	return it, validateSource(&it)
}

// shortOptions are the options of the short syntax.
var shortOptions = map[string]bool{"ro": true, "rw": true, "nocopy": true, "U": true, "noexec": true, "exec": true}

// isOptionList tells "/target:ro" from "source:target" in the two-part form.
func isOptionList(s string) bool {
	for _, o := range strings.Split(s, ",") {
		if !shortOptions[o] {
			return false
		}
	}
	return true
}

// parseLong validates the long syntax.
func parseLong(l longItem, limits config.Tmpfs) (Item, error) {
	it := Item{Kind: Kind(l.Type), Source: l.Source, ReadOnly: l.ReadOnly, NoCopy: l.NoCopy, Labels: l.Labels,
		UID: l.UID, GID: l.GID, Chown: l.Chown, NoExec: l.NoExec, External: l.External}
	if it.Kind == "" {
		it.Kind = KindVolume
	}
	var err error
	if it.Target, err = cleanTarget(l.Target); err != nil {
		return Item{}, err
	}
	switch it.Kind {
	case KindVolume, KindBind:
		if len(l.Size) > 0 {
			if it.Kind == KindBind {
				return Item{}, fmt.Errorf("size is only for types volume and tmpfs")
			}
			if it.Size, err = parseVolumeSize(l.Size); err != nil {
				return Item{}, err
			}
		}
		if err := parseOwnership(&it, l); err != nil {
			return Item{}, err
		}
	case KindTmpfs:
		if l.Source != "" || l.NoCopy || len(l.Labels) > 0 || l.UID != nil || l.GID != nil || l.Chown || l.Subpath != "" || l.External || l.CloneOf != "" || l.From != "" || l.FromPath != "" {
			return Item{}, errors.New("a tmpfs takes no source, noCopy, labels, uid, gid, chown, subpath, external, cloneOf, from or fromPath")
		}
		if it.Size, err = parseTmpfsSize(l.Size, limits); err != nil {
			return Item{}, err
		}
		if it.Mode, err = parseMode(l.Mode); err != nil {
			return Item{}, err
		}
		return it, nil
	default:
		return Item{}, fmt.Errorf("unknown type %q: want volume, bind or tmpfs", l.Type)
	}
	if it.Kind == KindBind && !strings.HasPrefix(it.Source, "/") {
		return Item{}, fmt.Errorf("bind source %q is not an absolute host path", it.Source)
	}
	if it.Kind == KindVolume && strings.HasPrefix(it.Source, "/") {
		return Item{}, fmt.Errorf("volume source %q is a path: use type bind for host paths", it.Source)
	}
	if len(it.Labels) > 0 && (it.Kind != KindVolume || it.Source == "") {
		return Item{}, errors.New("labels are only for named volumes")
	}
	if l.Subpath != "" {
		if it.Kind != KindVolume || it.Source == "" {
			return Item{}, fmt.Errorf("subpath %q: a subpath is only for named volumes", l.Subpath)
		}
		if it.Subpath, err = volumes.ValidateSubpath(l.Subpath); err != nil {
			return Item{}, err
		}
		if it.Chown {
			// chown gives the volume's root to the container's user and
			// records it for the whole volume; the container sees only
			// the subpath, which would keep its owner.
			return Item{}, fmt.Errorf("chown with subpath %q: chown gives the whole volume's root to the container's user, not the subpath; chown the volume from a mount without subpath", l.Subpath)
		}
	}
	if err := validateExternal(it, l); err != nil {
		return Item{}, err
	}
	if l.CloneOf != "" {
		if it.CloneOf, err = parseCloneOf(l); err != nil {
			return Item{}, err
		}
	}
	if it.From, err = parseFrom(it, l); err != nil {
		return Item{}, err
	}
	if err := labels.Validate(it.Labels); err != nil {
		return Item{}, err
	}
	return it, validateSource(&it)
}

// parseCloneOf checks cloneOf: NAME[@SNAP], a volume of the pod's own
// namespace, on a volume item that leaves size, owner and mode to its
// source.
func parseCloneOf(l longItem) (*volumes.CloneSource, error) {
	if l.Type != "" && Kind(l.Type) != KindVolume {
		return nil, fmt.Errorf("cloneOf %q: cloneOf is only for volumes", l.CloneOf)
	}
	if len(l.Size) > 0 || l.UID != nil || l.GID != nil || len(l.Mode) > 0 {
		return nil, fmt.Errorf("cloneOf %q: a clone has its source's size, uid, gid and mode; give none", l.CloneOf)
	}
	name, snap, hasSnap := strings.Cut(l.CloneOf, "@")
	if err := volumes.ValidateNamedVolume(name); err != nil {
		return nil, fmt.Errorf("cloneOf %q: want NAME or NAME@SNAP, a volume of the pod's namespace: %w", l.CloneOf, err)
	}
	if hasSnap {
		if err := volumes.ValidateSnapshotName(snap); err != nil {
			return nil, fmt.Errorf("cloneOf %q: %w", l.CloneOf, err)
		}
	}
	if name == l.Source {
		return nil, fmt.Errorf("cloneOf %q: a volume cannot be a clone of itself", l.CloneOf)
	}
	return &volumes.CloneSource{Volume: name, Snapshot: snap}, nil
}

// maxID is the largest uid or gid: 2^32-1 is the kernel's invalid id.
const maxID = 1<<32 - 2

// parseOwnership checks uid, gid, mode and chown of a volume or bind item.
// They give a volume's root an owner and mode, so a bind mount, whose source
// is the host's and never chowned, takes none of them.
func parseOwnership(it *Item, l longItem) error {
	if it.Kind == KindBind {
		if l.UID != nil || l.GID != nil || len(l.Mode) > 0 || l.Chown {
			return errors.New("uid, gid, mode and chown are only for volumes: a bind mount's source is never chowned")
		}
		return nil
	}
	for _, id := range []struct {
		key string
		v   *int
	}{{"uid", l.UID}, {"gid", l.GID}} {
		if id.v != nil && (*id.v < 0 || *id.v > maxID) {
			return fmt.Errorf("%s %d: want a number from 0 to %d", id.key, *id.v, maxID)
		}
	}
	if len(l.Mode) > 0 {
		m, err := parseOctalMode("mode", l.Mode)
		if err != nil {
			return err
		}
		it.DataMode = &m
	}
	return nil
}

func validateSource(it *Item) error {
	switch it.Kind {
	case KindVolume:
		if it.Source == "" {
			return nil
		}
		if err := volumes.ValidateNamedVolume(it.Source); err != nil {
			return err
		}
	case KindBind:
		if it.NoCopy {
			return errors.New("nocopy does not apply to bind mounts")
		}
		if it.Chown {
			return errors.New("U (chown) does not apply to bind mounts: their sources are never chowned")
		}
		if strings.ContainsAny(it.Source, "\x00\n,") {
			return fmt.Errorf("bind source %q contains a forbidden character", it.Source)
		}
		it.Source = path.Clean(it.Source)
	}
	return nil
}

// forbiddenTargets are kernel filesystems a volume must not cover.
var forbiddenTargets = []string{"/proc", "/sys", "/dev"}

// cleanTarget validates a target path inside the container.
func cleanTarget(t string) (string, error) {
	if t == "" {
		return "", errors.New("no target")
	}
	if strings.ContainsAny(t, "\x00\n") {
		return "", fmt.Errorf("target %q contains a forbidden character", t)
	}
	if !strings.HasPrefix(t, "/") {
		return "", fmt.Errorf("target %q is not an absolute path", t)
	}
	c := path.Clean(t)
	if c == "/" {
		return "", errors.New("target cannot be /")
	}
	for _, f := range forbiddenTargets {
		if c == f || strings.HasPrefix(c, f+"/") {
			return "", fmt.Errorf("target %q is under %s", t, f)
		}
	}
	if len(c) > 4096 {
		return "", errors.New("target is longer than 4096 bytes")
	}
	return c, nil
}

func parseTmpfsSize(raw json.RawMessage, limits config.Tmpfs) (config.Size, error) {
	if len(raw) == 0 {
		return limits.DefaultSize, nil
	}
	var s config.Size
	if err := s.UnmarshalJSON(raw); err != nil {
		return 0, fmt.Errorf("tmpfs size: %w", err)
	}
	if s <= 0 {
		return 0, fmt.Errorf("tmpfs size %s must be positive", s)
	}
	if s > limits.MaxSize {
		return 0, fmt.Errorf("tmpfs size %s is above the maximum %s", s, limits.MaxSize)
	}
	return s, nil
}

// parseVolumeSize parses the size of a volume; the maximum is the plan's to
// check, against the configuration.
func parseVolumeSize(raw json.RawMessage) (config.Size, error) {
	var s config.Size
	if err := s.UnmarshalJSON(raw); err != nil {
		return 0, fmt.Errorf("volume size: %w", err)
	}
	if s <= 0 {
		return 0, fmt.Errorf("volume size %s must be positive", s)
	}
	return s, nil
}

func parseMode(raw json.RawMessage) (uint32, error) {
	if len(raw) == 0 {
		return 0o1777, nil
	}
	return parseOctalMode("tmpfs mode", raw)
}

// parseOctalMode parses an octal permission mode such as "0770" or 770.
func parseOctalMode(what string, raw json.RawMessage) (uint32, error) {
	s := strings.Trim(string(raw), `"`)
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("%s %s: want an octal mode such as \"1777\"", what, string(raw))
	}
	return uint32(m), nil
}

// validateExternal refuses external: true but on a named volume, and with
// what applies only when a volume is made, which an external one never is.
func validateExternal(it Item, l longItem) error {
	if !it.External {
		return nil
	}
	if it.Kind != KindVolume || it.Source == "" {
		return errors.New("external is only for named volumes")
	}
	if len(l.Labels) > 0 || len(l.Size) > 0 || l.UID != nil || l.GID != nil || len(l.Mode) > 0 {
		return errors.New("an external volume is never made here, so it takes no labels, size, uid, gid or mode")
	}
	if l.CloneOf != "" {
		return errors.New("an external volume is never made here, so it is no clone: give external or cloneOf")
	}
	return nil
}

// ParseImageVolumeMode parses the image-volumes annotation found under key.
func ParseImageVolumeMode(key, value string) (config.ImageVolumeMode, error) {
	m, err := config.ParseImageVolumeMode(value)
	if err != nil {
		return "", fmt.Errorf("%w %s: value %q: want volume, tmpfs or ignore", ErrInvalid, key, value)
	}
	return m, nil
}

// checkYAMLShape refuses, before anything is expanded, the YAML features a
// hostile pod author can turn into time and memory: anchors and aliases (a
// small value that expands to gigabytes) and deep nesting. It parses into a
// node tree, which keeps aliases as references.
func checkYAMLShape(value string) error {
	var root yamlv3.Node
	if err := yamlv3.Unmarshal([]byte(value), &root); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.Join(strings.Fields(strings.TrimPrefix(msg, "unmarshal errors:")), " ")
		return fmt.Errorf("not a YAML list: %s", msg)
	}
	if err := walkYAML(&root, 0); err != nil {
		return err
	}
	return checkOctalModes(&root)
}

// checkOctalModes refuses an unquoted mode with a leading 0: YAML reads
// 0770 as the octal number 504, which the parser would then take for the
// mode 0504.
func checkOctalModes(root *yamlv3.Node) error {
	if root.Kind != yamlv3.DocumentNode || len(root.Content) != 1 || root.Content[0].Kind != yamlv3.SequenceNode {
		return nil
	}
	for i, item := range root.Content[0].Content {
		if item.Kind != yamlv3.MappingNode {
			continue
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			if k.Value == "mode" && v.Kind == yamlv3.ScalarNode && v.Style&(yamlv3.SingleQuotedStyle|yamlv3.DoubleQuotedStyle) == 0 &&
				len(v.Value) > 1 && v.Value[0] == '0' {
				return fmt.Errorf("item %d: mode %s: quote it (\"%s\"), or YAML reads it as another number", i+1, v.Value, v.Value)
			}
		}
	}
	return nil
}

func walkYAML(n *yamlv3.Node, depth int) error {
	if n.Kind == yamlv3.AliasNode || n.Anchor != "" {
		return errors.New("YAML anchors and aliases are not allowed")
	}
	if n.Kind == yamlv3.SequenceNode || n.Kind == yamlv3.MappingNode {
		depth++
		if depth > maxYAMLDepth {
			return fmt.Errorf("value nests more than the %d levels allowed", maxYAMLDepth)
		}
	}
	for _, c := range n.Content {
		if err := walkYAML(c, depth); err != nil {
			return err
		}
	}
	return nil
}

func yamlError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	return strings.TrimPrefix(msg, "yaml: ")
}
