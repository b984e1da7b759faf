package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes"
)

type exportOptions struct {
	output string
}

func newVolumeExportCommand(g *globalOptions, s streams) *cobra.Command {
	var o exportOptions
	cmd := &cobra.Command{
		Use:   "export [-o FILE] NAME",
		Short: "Write a volume's data as a tar to a file or stdout",
		Long: `Write the data of a volume as a tar archive: owners, modes, times, extended
attributes, hard links, and symlinks as links. The volume may be in use: a
sized one is then read from a temporary snapshot, as it was at one instant
(crash-consistent); a plain one is read while it is written. Its data is read
without following symlinks. Sockets, FIFOs and device nodes are
left out, with a warning. Without -o the tar goes to stdout, which must not
be a terminal.`,
		Example: `  nri-volumes volume export -o redis-data.tar redis-data
  nri-volumes -n shop volume export cart | gzip > cart.tar.gz`,
		Args:              namesArgs("volume export", true),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeExport(g, o, args[0], s)
		},
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "write the tar to FILE instead of stdout")
	return cmd
}

func volumeExport(g *globalOptions, o exportOptions, name string, s streams) error {
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	out := s.out
	var file *os.File
	if o.output != "" && o.output != "-" {
		// A temporary file renamed into place: a failed export leaves no
		// tar that looks complete.
		file, err = os.CreateTemp(filepath.Dir(o.output), ".nri-volumes-export-*")
		if err != nil {
			return err
		}
		defer os.Remove(file.Name())
		defer file.Close()
		out = file
	} else if f, ok := out.(*os.File); ok && fsx.IsTerminal(f) {
		return fmt.Errorf("%w: volume export: stdout is a terminal; use -o FILE or a pipe", errUsage)
	}
	stats, err := store.Export(g.nsOrDefault(), name, out)
	if err != nil {
		return err
	}
	if stats.Skipped > 0 {
		fmt.Fprintf(s.err, "nri-volumes: volume %q: left out %d socket(s), FIFO(s), device node(s) or mount(s)\n", name, stats.Skipped)
	}
	if file == nil {
		return nil
	}
	if err := file.Close(); err != nil {
		return err
	}
	return os.Rename(file.Name(), o.output)
}

type importOptions struct {
	maxBytes int64
	maxFiles int64
}

func newVolumeImportCommand(g *globalOptions, s streams) *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "import NAME FILE|-",
		Short: "Fill an empty volume from a tar",
		Long: `Fill an existing, empty volume from a tar archive (FILE, or - for stdin), such
as volume export writes. A volume that a container uses is refused, as volume
rm refuses it, since a failed import empties the volume again; while the
import runs, a container that asks for the volume is refused. The archive is
untrusted: entries with "..", absolute names, entries beneath a symlink,
device nodes, FIFOs, extended attributes over 64 KiB, and more entries or
bytes than the limits are refused with a message that names the entry,
nothing outside the volume is touched, and the volume is left empty. Holes
of sparse files, and runs of zeros, stay holes.
The limits default to the configuration's copyUpMaxFiles and copyUpMaxSize;
the bytes count files at their full size and the archive's PAX records.`,
		Example: `  nri-volumes volume create redis-data
  nri-volumes volume import redis-data redis-data.tar
  gunzip -c cart.tar.gz | nri-volumes -n shop volume import cart -`,
		Args: argsBetween(2, 2, "volume import takes a NAME and a FILE (or - for stdin)"),
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return g.completeVolumes(c, args, toComplete)
			}
			return nil, cobra.ShellCompDirectiveDefault
		},
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeImport(g, o, args[0], args[1], s)
		},
	}
	cmd.Flags().Int64Var(&o.maxBytes, "max-bytes", -1, "most bytes to import (0: no limit; default: limits.copyUpMaxSize)")
	cmd.Flags().Int64Var(&o.maxFiles, "max-files", -1, "most entries to import (0: no limit; default: limits.copyUpMaxFiles)")
	return cmd
}

func volumeImport(g *globalOptions, o importOptions, name, from string, s streams) error {
	limits, err := importLimits(g, o)
	if err != nil {
		return err
	}
	var in io.Reader = s.in
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	} else if f, ok := in.(*os.File); ok && fsx.IsTerminal(f) {
		return fmt.Errorf("%w: volume import: stdin is a terminal; give a FILE or a pipe", errUsage)
	}
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	_, err = store.Import(g.nsOrDefault(), name, in, limits)
	return err
}

// importLimits are the flags, or else the copy-up limits of the
// configuration: both bound what untrusted content may put in a volume.
func importLimits(g *globalOptions, o importOptions) (volumes.ArchiveLimits, error) {
	limits := volumes.ArchiveLimits{MaxBytes: o.maxBytes, MaxFiles: o.maxFiles}
	if limits.MaxBytes >= 0 && limits.MaxFiles >= 0 {
		return limits, nil
	}
	cfg, err := g.config()
	if err != nil {
		return limits, err
	}
	if limits.MaxBytes < 0 {
		limits.MaxBytes = int64(cfg.Limits.CopyUpMaxSize)
	}
	if limits.MaxFiles < 0 {
		limits.MaxFiles = cfg.Limits.CopyUpMaxFiles
	}
	return limits, nil
}
