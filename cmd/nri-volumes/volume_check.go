package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/volumes"
)

type checkOptions struct {
	allNamespaces bool
}

func newVolumeCheckCommand(g *globalOptions, s streams) *cobra.Command {
	var o checkOptions
	cmd := &cobra.Command{
		Use:   "check [-A]",
		Short: "Report broken store entries (exit 1 if any); deletes nothing",
		Long: `Report the entries of the store that are not usable volumes: a directory
without volume.json, metadata without _data, symlinks planted in the store,
data of removed volumes left in the trash (the next rm or prune deletes it).
It only reads, and exits 1 when it found a problem: a person decides what to
delete, since a directory without metadata may be data someone still wants.`,
		Example: `  nri-volumes volume check -A`,
		Args:    noArgs("volume check"),
		RunE:    func(*cobra.Command, []string) error { return volumeCheck(g, o, s) },
	}
	cmd.Flags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "check every namespace")
	return cmd
}

// volumeCheck reports the entries of the store that are not usable volumes.
func volumeCheck(g *globalOptions, o checkOptions, s streams) error {
	store, err := g.open()
	if err != nil {
		return err
	}
	defer store.Close()
	probs, err := store.Check()
	if err != nil {
		return err
	}
	ns := g.nsOrDefault()
	var shown []volumes.Problem
	for _, p := range probs {
		// Problems outside any namespace (stray pins) concern every one.
		if o.allNamespaces || p.Namespace == ns || p.Namespace == "" {
			shown = append(shown, p)
		}
	}
	if err := printProblems(s.out, shown); err != nil {
		return err
	}
	if len(shown) > 0 {
		fmt.Fprintf(s.err, "nri-volumes: %d problem(s) found; nothing was changed\n", len(shown))
		return errReported
	}
	return nil
}

func printProblems(out io.Writer, probs []volumes.Problem) error {
	w := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, "NAMESPACE\tNAME\tPROBLEM")
	for _, p := range probs {
		fmt.Fprintf(w, "%s\t%s\t%s\n", cell(p.Namespace), cell(p.Name), cell(p.Reason))
	}
	return w.Flush()
}

// cell makes an entry name fit one table cell: names planted in the store
// may hold tabs, newlines or escape sequences, which would forge rows or
// drive the terminal; those are quoted. An empty cell shows as "-".
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}
