package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/plugin"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// globalOptions are the persistent flags: they may stand before or after the
// command that uses them.
type globalOptions struct {
	configPath string
	root       string
	namespace  string
	logLevel   string
	// cfg is the configuration storeRoot loaded, or nil when --root alone
	// named the store.
	cfg *config.Config
	// loaded is what config read, kept so that no command reads it twice.
	loaded *config.Config
}

func newRootCommand(s streams) *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "nri-volumes",
		Short: "Docker-style volumes for CRI containers, as an NRI plugin for containerd",
		Long: `nri-volumes is an NRI plugin for containerd that gives CRI containers Docker-style
volumes (named, anonymous and image VOLUMEs with copy-up, tmpfs, bind mounts),
and the CLI that manages those volumes.

With no command and the NRI_PLUGIN_* environment that containerd sets when it
launches a plugin from its plugin_path, it runs the plugin.`,
		Example: `  nri-volumes run --config /etc/nri-volumes/config.yaml
  nri-volumes -n k8s.io volume ls
  nri-volumes volume --root /var/lib/nri-volumes inspect redis-data`,
		// Without RunE, cobra prints the help and succeeds on a mistyped
		// command; this says what is wrong and exits 2.
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				fmt.Fprint(s.err, c.UsageString())
			} else {
				fmt.Fprintf(s.err, "nri-volumes: unknown command %q\n\n%s", args[0], c.UsageString())
			}
			return errUsageReported
		},
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(*cobra.Command, []string) error {
			level, err := logrus.ParseLevel(g.logLevel)
			if err != nil {
				return fmt.Errorf("%w: --log-level: %w", errUsage, err)
			}
			logrus.SetLevel(level)
			return nil
		},
	}
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w: %s: %w", errUsage, c.CommandPath(), err)
	})
	f := root.PersistentFlags()
	f.StringVar(&g.configPath, "config", "", "configuration file (YAML) that names the store root")
	f.StringVar(&g.root, "root", "", "volume store root (overrides the configuration)")
	f.StringVarP(&g.namespace, "namespace", "n", "default", "namespace of the volumes")
	f.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	_ = root.RegisterFlagCompletionFunc("namespace", g.completeNamespaces)
	_ = root.MarkPersistentFlagFilename("config", "yaml", "yml")
	_ = root.MarkPersistentFlagDirname("root")

	root.AddCommand(
		newRunCommand(g),
		newVolumeCommand(g, s),
		newHookCommand(s),
		newVersionCommand(s),
		newCompletionCommand(s),
	)
	// Every Use line already shows its flags.
	var noFlagsInUse func(*cobra.Command)
	noFlagsInUse = func(c *cobra.Command) {
		c.DisableFlagsInUseLine = true
		for _, sub := range c.Commands() {
			noFlagsInUse(sub)
		}
	}
	noFlagsInUse(root)
	return root
}

// noArgs refuses positional arguments with a usage error.
func noArgs(what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%w: %s takes no arguments", errUsage, what)
		}
		return nil
	}
}

// namesArgs wants at least one NAME, or exactly one when one is set.
func namesArgs(what string, one bool) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case one && len(args) != 1:
			return fmt.Errorf("%w: %s takes exactly one NAME", errUsage, what)
		case len(args) == 0:
			return fmt.Errorf("%w: %s needs at least one NAME", errUsage, what)
		}
		return nil
	}
}

// argsBetween wants from least to most arguments (most < 0: no bound);
// usage, the whole error text, says what the command takes.
func argsBetween(least, most int, usage string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < least || most >= 0 && len(args) > most {
			return fmt.Errorf("%w: %s", errUsage, usage)
		}
		return nil
	}
}

func (g *globalOptions) nsOrDefault() string {
	if g.namespace == "" {
		return "default"
	}
	return g.namespace
}

// storeRoot is --root, or the root the configuration names.
func (g *globalOptions) storeRoot() (string, error) {
	root := g.root
	if root == "" || g.configPath != "" {
		cfg, err := g.config()
		if err != nil {
			return "", err
		}
		g.cfg = cfg
		if root == "" {
			root = cfg.Root
		}
	}
	return filepath.Abs(root)
}

// config is the configuration --config names (the defaults without it),
// read on first use.
func (g *globalOptions) config() (*config.Config, error) {
	if g.loaded == nil {
		cfg, err := config.Load(g.configPath)
		if err != nil {
			return nil, err
		}
		g.loaded = cfg
	}
	return g.loaded, nil
}

// checkMaxSize refuses a size above the configuration's sizes.maxSize.
func (g *globalOptions) checkMaxSize(size int64) error {
	if g.cfg == nil || g.cfg.Sizes.MaxSize == 0 || size <= int64(g.cfg.Sizes.MaxSize) {
		return nil
	}
	return fmt.Errorf("%w: size %s is above sizes.maxSize %s", volumes.ErrInvalid,
		volumes.FormatBytes(size), volumes.FormatBytes(int64(g.cfg.Sizes.MaxSize)))
}

// open validates the namespace and the volume names a command was given,
// before anything on disk is touched, then opens the store.
func (g *globalOptions) open(names ...string) (*volumes.Store, error) {
	if err := volumes.ValidateNamespace(g.nsOrDefault()); err != nil {
		return nil, err
	}
	for _, n := range names {
		if err := volumes.ValidateName(n); err != nil {
			return nil, err
		}
	}
	root, err := g.storeRoot()
	if err != nil {
		return nil, err
	}
	// Without a configuration the defaults hold, limits.overcommit's
	// bound on the node included.
	cfg := g.cfg
	if cfg == nil {
		cfg = config.Default()
	}
	return volumes.Open(root, volumes.WithSizePolicy(plugin.SizePolicy(cfg)))
}

// existingVolumes lists volumes for shell completion, only from a store
// that exists, so pressing TAB never creates one; on any error it lists none.
func (g *globalOptions) existingVolumes(opts volumes.ListOptions) []*volumes.Volume {
	root, err := g.storeRoot()
	if err != nil {
		return nil
	}
	if st, err := os.Stat(filepath.Join(root, "volumes")); err != nil || !st.IsDir() {
		return nil
	}
	store, err := volumes.Open(root)
	if err != nil {
		return nil
	}
	defer store.Close()
	vols, err := store.List(opts)
	if err != nil {
		return nil
	}
	return vols
}

// completeVolumes completes the names of the volumes in the namespace.
func (g *globalOptions) completeVolumes(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	if volumes.ValidateNamespace(g.nsOrDefault()) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	vols := g.existingVolumes(volumes.ListOptions{Namespace: g.nsOrDefault()})
	names := make([]string, 0, len(vols))
	for _, v := range vols {
		names = append(names, v.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeNamespaces completes the namespaces that hold volumes.
func (g *globalOptions) completeNamespaces(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	vols := g.existingVolumes(volumes.ListOptions{AllNamespaces: true})
	nss := make([]string, 0, len(vols))
	for _, v := range vols {
		nss = append(nss, v.Namespace)
	}
	slices.Sort(nss)
	return slices.Compact(nss), cobra.ShellCompDirectiveNoFileComp
}

// stringArray is a repeatable flag that keeps commas, unlike StringSlice:
// label values and filters may hold them.
func stringArray(f *pflag.FlagSet, p *[]string, name, short, usage string) {
	f.StringArrayVarP(p, name, short, nil, usage)
}
