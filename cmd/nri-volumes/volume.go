package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

const volumeUsage = `Usage: nri-volumes volume COMMAND [OPTIONS]

Commands:
  create [--label K=V]... [-o|--opt size=SIZE] NAME
  update --size SIZE NAME       grow a sized volume (never shrinks), in use or not
  ls [-q] [-s|--size] [--filter K=V]... [--format table|json|TEMPLATE] [-A|--all-namespaces]
  inspect [-s|--size] NAME...
  rm [-f|--force] NAME...
  prune [-a|--all] [-f|--force] [--filter K=V]...
  check [-A|--all-namespaces]   report broken store entries (exit 1 if any); deletes nothing

Options of every command:
  --config FILE         configuration file that names the store root
  --root DIR            volume store root (overrides --config)
  -n, --namespace NS    namespace of the volumes (default "default")

Sizes are whole numbers with a unit: 512Mi, 10Gi, 1G. A sized volume's limit is
enforced by the kernel; ls -s and inspect -s show its use and its limit.

Filters: name=NAME|GLOB, label=KEY, label=KEY=VALUE, dangling=true|false, anonymous=true|false
`

// storeOptions are the flags every volume command takes.
type storeOptions struct {
	configPath string
	root       string
	namespace  string
	// cfg is the configuration open loaded, or nil when --root alone
	// named the store.
	cfg *config.Config
}

func (o *storeOptions) register(f *flagSet) {
	f.stringVar(&o.configPath, "--config")
	f.stringVar(&o.root, "--root")
	f.stringVar(&o.namespace, "-n", "--namespace")
}

// open opens the store the options name; --root wins over the configuration.
// open validates the namespace and the volume names a command was given,
// before anything on disk is touched, then opens the store.
func (o *storeOptions) open(names ...string) (*volumes.Store, error) {
	if err := volumes.ValidateNamespace(o.nsOrDefault()); err != nil {
		return nil, err
	}
	for _, n := range names {
		if err := volumes.ValidateName(n); err != nil {
			return nil, err
		}
	}
	root := o.root
	if root == "" || o.configPath != "" {
		cfg, err := config.Load(o.configPath)
		if err != nil {
			return nil, err
		}
		o.cfg = cfg
		if root == "" {
			root = cfg.Root
		}
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	store, err := volumes.Open(root)
	if err != nil {
		return nil, err
	}
	if o.cfg != nil {
		store.SetSizePolicy(volumes.SizePolicy{
			Backend:        volumes.Backend(o.cfg.Sizes.Backend),
			NamespaceBytes: int64(o.cfg.Limits.NamespaceBytes),
		})
	}
	return store, nil
}

// checkMaxSize refuses a size above the configuration's sizes.maxSize.
func (o *storeOptions) checkMaxSize(size int64) error {
	if o.cfg == nil || o.cfg.Sizes.MaxSize == 0 || size <= int64(o.cfg.Sizes.MaxSize) {
		return nil
	}
	return fmt.Errorf("%w: size %s is above sizes.maxSize %s", volumes.ErrInvalid,
		volumes.FormatBytes(size), volumes.FormatBytes(int64(o.cfg.Sizes.MaxSize)))
}

// errHelp means -h or --help was given: the usage goes to stdout.
var errHelp = errors.New("help requested")

func volumeCommand(args []string, s streams) error {
	err := volumeSubcommand(args, s)
	if errors.Is(err, errHelp) {
		fmt.Fprint(s.out, volumeUsage)
		return nil
	}
	return err
}

func volumeSubcommand(args []string, s streams) error {
	if len(args) == 0 {
		fmt.Fprint(s.err, volumeUsage)
		return fmt.Errorf("%w: volume needs a command", errUsage)
	}
	switch args[0] {
	case "create":
		return volumeCreate(args[1:], s)
	case "update":
		return volumeUpdate(args[1:], s)
	case "ls", "list":
		return volumeList(args[1:], s)
	case "inspect":
		return volumeInspect(args[1:], s)
	case "rm", "remove":
		return volumeRemove(args[1:], s)
	case "prune":
		return volumePrune(args[1:], s)
	case "check":
		return volumeCheck(args[1:], s)
	case "help", "-h", "--help":
		fmt.Fprint(s.out, volumeUsage)
		return nil
	}
	fmt.Fprint(s.err, volumeUsage)
	return fmt.Errorf("%w: unknown volume command %q", errUsage, args[0])
}

type createOptions struct {
	storeOptions
	labels []string
	opts   []string
}

func volumeCreate(args []string, s streams) error {
	var o createOptions
	f := newFlagSet("volume create")
	o.register(f)
	f.listVar(&o.labels, "--label")
	f.listVar(&o.opts, "-o", "--opt")
	names, err := f.parse(args)
	if err != nil || len(names) != 1 {
		return usageError(err, "volume create takes exactly one NAME")
	}
	labels, err := parseLabels(o.labels)
	if err != nil {
		return err
	}
	opts, err := parseCreateOpts(o.opts)
	if err != nil {
		return err
	}
	opts.Labels = labels
	store, err := o.open(names...)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := o.checkMaxSize(opts.Size); err != nil {
		return err
	}
	v, err := store.Create(o.nsOrDefault(), names[0], opts)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(s.out, v.Name)
	return err
}

func (o *storeOptions) nsOrDefault() string {
	if o.namespace == "" {
		return "default"
	}
	return o.namespace
}

func parseLabels(specs []string) (map[string]string, error) {
	labels := make(map[string]string, len(specs))
	for _, l := range specs {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, fmt.Errorf("--label %q: %w: want KEY=VALUE", l, volumes.ErrInvalid)
		}
		labels[k] = v
	}
	return labels, nil
}

type listOptions struct {
	storeOptions
	quiet         bool
	size          bool
	allNamespaces bool
	format        string
	filters       []string
}

func volumeList(args []string, s streams) error {
	var o listOptions
	f := newFlagSet("volume ls")
	o.register(f)
	f.boolVar(&o.quiet, "-q", "--quiet")
	f.boolVar(&o.size, "-s", "--size")
	f.boolVar(&o.allNamespaces, "-A", "--all-namespaces")
	f.stringVar(&o.format, "--format")
	f.listVar(&o.filters, "-f", "--filter")
	rest, err := f.parse(args)
	if err != nil || len(rest) > 0 {
		return usageError(err, "volume ls takes no arguments")
	}
	filter, err := volumes.ParseFilters(o.filters)
	if err != nil {
		return err
	}
	printer, err := newListPrinter(o, s.out)
	if err != nil {
		return err
	}
	store, err := o.open()
	if err != nil {
		return err
	}
	defer store.Close()
	vols, err := store.List(volumes.ListOptions{
		Namespace:     o.nsOrDefault(),
		AllNamespaces: o.allNamespaces,
		Size:          o.size && !o.quiet,
	})
	if err != nil {
		return err
	}
	var shown []*volumes.Volume
	for _, v := range vols {
		if filter(v) {
			shown = append(shown, v)
		}
	}
	return printer(shown)
}

// newListPrinter picks the output of `volume ls` from its options; a bad
// template fails before the store is opened.
func newListPrinter(o listOptions, out io.Writer) (func([]*volumes.Volume) error, error) {
	switch {
	case o.quiet:
		return func(vols []*volumes.Volume) error { return printNames(out, vols) }, nil
	case o.format == "" || o.format == "table":
		return func(vols []*volumes.Volume) error { return printTable(out, vols, o.size, o.allNamespaces) }, nil
	case o.format == "json":
		return func(vols []*volumes.Volume) error { return printJSONLines(out, vols) }, nil
	}
	tmpl, err := template.New("format").Funcs(template.FuncMap{"json": toJSON}).Parse(o.format)
	if err != nil {
		return nil, fmt.Errorf("--format: %w", err)
	}
	return func(vols []*volumes.Volume) error { return printTemplate(out, tmpl, vols) }, nil
}

func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func printNames(out io.Writer, vols []*volumes.Volume) error {
	w := bufio.NewWriter(out)
	for _, v := range vols {
		fmt.Fprintln(w, v.Name)
	}
	return w.Flush()
}

// printTable prints the ls table; with size, a SIZE column, and a LIMIT
// column when a sized volume is among vols.
func printTable(out io.Writer, vols []*volumes.Volume, size, allNamespaces bool) error {
	w := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	limits := false
	for _, v := range vols {
		limits = limits || size && v.Limit > 0
	}
	var cols []string
	if allNamespaces {
		cols = append(cols, "NAMESPACE")
	}
	cols = append(cols, "VOLUME NAME", "DIRECTORY")
	if size {
		cols = append(cols, "SIZE")
	}
	if limits {
		cols = append(cols, "LIMIT")
	}
	fmt.Fprintln(w, strings.Join(cols, "\t"))
	for _, v := range vols {
		cols = cols[:0]
		if allNamespaces {
			cols = append(cols, v.Namespace)
		}
		cols = append(cols, v.Name, v.Mountpoint)
		if size {
			s := "-"
			if v.Size != nil {
				s = humanSize(*v.Size)
			}
			cols = append(cols, s)
		}
		if limits {
			limit := "-"
			if v.Limit > 0 {
				limit = humanSize(v.Limit)
			}
			cols = append(cols, limit)
		}
		fmt.Fprintln(w, strings.Join(cols, "\t"))
	}
	return w.Flush()
}

func printJSONLines(out io.Writer, vols []*volumes.Volume) error {
	enc := json.NewEncoder(out)
	for _, v := range vols {
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}

func printTemplate(out io.Writer, tmpl *template.Template, vols []*volumes.Volume) error {
	w := bufio.NewWriter(out)
	for _, v := range vols {
		if err := tmpl.Execute(w, v); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

// humanSize formats bytes in binary units, like nerdctl: 512B, 4.0KiB, 1.5GiB.
func humanSize(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	f := float64(n) / 1024
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + units[i]
}

type inspectOptions struct {
	storeOptions
	size bool
}

func volumeInspect(args []string, s streams) error {
	var o inspectOptions
	f := newFlagSet("volume inspect")
	o.register(f)
	f.boolVar(&o.size, "-s", "--size")
	names, err := f.parse(args)
	if err != nil || len(names) == 0 {
		return usageError(err, "volume inspect needs at least one NAME")
	}
	store, err := o.open(names...)
	if err != nil {
		return err
	}
	defer store.Close()
	found := []*volumes.Volume{}
	failed := false
	for _, n := range names {
		v, err := store.Get(o.nsOrDefault(), n)
		if err == nil && o.size {
			var size int64
			if size, err = store.Size(v); err == nil {
				v.Size = &size
			}
		}
		if err != nil {
			fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
			failed = true
			continue
		}
		found = append(found, v)
	}
	b, err := json.MarshalIndent(found, "", "    ")
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(s.out, string(b)); err != nil {
		return err
	}
	if failed {
		return errReported
	}
	return nil
}

type removeOptions struct {
	storeOptions
	force bool
}

func volumeRemove(args []string, s streams) error {
	var o removeOptions
	f := newFlagSet("volume rm")
	o.register(f)
	f.boolVar(&o.force, "-f", "--force")
	names, err := f.parse(args)
	if err != nil || len(names) == 0 {
		return usageError(err, "volume rm needs at least one NAME")
	}
	store, err := o.open(names...)
	if err != nil {
		return err
	}
	defer store.Close()
	failed := false
	for _, n := range names {
		err := store.Remove(o.nsOrDefault(), n)
		switch {
		case err == nil:
			fmt.Fprintln(s.out, n)
		case o.force && errors.Is(err, volumes.ErrNotFound):
		default:
			fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
			failed = true
		}
	}
	if failed {
		return errReported
	}
	return nil
}

type pruneOptions struct {
	storeOptions
	all     bool
	force   bool
	filters []string
}

func volumePrune(args []string, s streams) error {
	var o pruneOptions
	f := newFlagSet("volume prune")
	o.register(f)
	f.boolVar(&o.all, "-a", "--all")
	f.boolVar(&o.force, "-f", "--force")
	f.listVar(&o.filters, "--filter")
	rest, err := f.parse(args)
	if err != nil || len(rest) > 0 {
		return usageError(err, "volume prune takes no arguments")
	}
	filter, err := volumes.ParseFilters(o.filters)
	if err != nil {
		return err
	}
	ns := o.nsOrDefault()
	if err := volumes.ValidateNamespace(ns); err != nil {
		return err
	}
	if !o.force {
		what := "anonymous volumes"
		if o.all {
			what = "volumes"
		}
		fmt.Fprintf(s.err, "WARNING! This will remove all %s in namespace %q not used by at least one container.\n"+
			"Are you sure you want to continue? [y/N] ", what, ns)
		if !confirmed(s.in) {
			return nil
		}
	}
	store, err := o.open()
	if err != nil {
		return err
	}
	defer store.Close()
	removed, reclaimed, err := store.Prune(volumes.PruneOptions{Namespace: ns, All: o.all, Filter: filter})
	if len(removed) > 0 {
		fmt.Fprintln(s.out, "Deleted Volumes:")
		for _, v := range removed {
			fmt.Fprintln(s.out, v.Name)
		}
		fmt.Fprintln(s.out)
	}
	fmt.Fprintf(s.out, "Total reclaimed space: %s\n", humanSize(reclaimed))
	return err
}

func confirmed(in io.Reader) bool {
	if in == nil {
		return false
	}
	line, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// usageError reports a command line that did not parse, or had the wrong
// arguments.
func usageError(err error, msg string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", errUsage, msg)
}

// flagSet parses the flags of one command the way nerdctl users expect:
// flags before or after the arguments, --flag=value or --flag value, short
// and long names, repeatable list flags, and "--" ending the flags.
type flagSet struct {
	cmd   string
	flags map[string]*flagDef
}

type flagDef struct {
	isBool bool
	set    func(value string) error
}

func newFlagSet(cmd string) *flagSet {
	return &flagSet{cmd: cmd, flags: make(map[string]*flagDef)}
}

func (f *flagSet) define(d *flagDef, names []string) {
	for _, n := range names {
		f.flags[n] = d
	}
}

func (f *flagSet) boolVar(p *bool, names ...string) {
	f.define(&flagDef{isBool: true, set: func(v string) error {
		b, err := strconv.ParseBool(v)
		*p = b
		return err
	}}, names)
}

func (f *flagSet) stringVar(p *string, names ...string) {
	f.define(&flagDef{set: func(v string) error { *p = v; return nil }}, names)
}

func (f *flagSet) listVar(p *[]string, names ...string) {
	f.define(&flagDef{set: func(v string) error { *p = append(*p, v); return nil }}, names)
}

// parse sets the flags in args and returns the positional arguments.
func (f *flagSet) parse(args []string) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		if a == "-h" || a == "--help" {
			return nil, errHelp
		}
		name, value, hasValue := strings.Cut(a, "=")
		d, ok := f.flags[name]
		if !ok {
			return nil, fmt.Errorf("%w: %s: unknown flag %q", errUsage, f.cmd, name)
		}
		switch {
		case d.isBool && !hasValue:
			value = "true"
		case !hasValue:
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%w: %s: flag %s needs a value", errUsage, f.cmd, name)
			}
			i++
			value = args[i]
		}
		if err := d.set(value); err != nil {
			return nil, fmt.Errorf("%w: %s: flag %s: bad value %q", errUsage, f.cmd, name, value)
		}
	}
	return pos, nil
}

type updateOptions struct {
	storeOptions
	size string
}

// volumeUpdate grows a sized volume to --size.
func volumeUpdate(args []string, s streams) error {
	var o updateOptions
	f := newFlagSet("volume update")
	o.register(f)
	f.stringVar(&o.size, "--size")
	names, err := f.parse(args)
	if err != nil || len(names) != 1 || o.size == "" {
		return usageError(err, "volume update takes --size SIZE and exactly one NAME")
	}
	size, err := parseVolumeSize(o.size)
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	store, err := o.open(names...)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := o.checkMaxSize(size); err != nil {
		return err
	}
	v, err := store.Grow(o.nsOrDefault(), names[0], size)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(s.out, v.Name)
	return err
}
