package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/internal/bytesize"
	"github.com/nri-volumes/nri-volumes/volumes"
)

type listOptions struct {
	quiet         bool
	size          bool
	allNamespaces bool
	format        string
	filters       []string
}

func newVolumeListCommand(g *globalOptions, s streams) *cobra.Command {
	var o listOptions
	cmd := &cobra.Command{
		Use:     "ls [-q] [-s] [-A] [--filter K=V]... [--format table|json|TEMPLATE]",
		Aliases: []string{"list"},
		Short:   "List volumes",
		Long: `List the volumes of the namespace (all namespaces with -A) as a table with the
columns VOLUME NAME and DIRECTORY (and SIZE with -s), as nerdctl does.
--format json prints one JSON object per line; any other format is a Go
template run for each volume, with the function json.

` + filtersHelp,
		Example: `  nri-volumes volume ls
  nri-volumes volume ls -q --filter dangling=true
  nri-volumes -n k8s.io volume ls --format '{{json .}}'
  nri-volumes volume ls -A --format '{{.Namespace}}/{{.Name}} {{.Mountpoint}}'`,
		Args: noArgs("volume ls"),
		RunE: func(*cobra.Command, []string) error { return volumeList(g, o, s) },
	}
	f := cmd.Flags()
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print only the names")
	f.BoolVarP(&o.size, "size", "s", false, "show the disk usage of each volume (walks their data)")
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list the volumes of every namespace")
	f.StringVar(&o.format, "format", "", "table, json, or a Go template")
	stringArray(f, &o.filters, "filter", "f", "filter K=V (repeatable)")
	return cmd
}

func volumeList(g *globalOptions, o listOptions, s streams) error {
	filter, err := volumes.ParseFilters(o.filters)
	if err != nil {
		return err
	}
	printer, err := newListPrinter(o, s.out)
	if err != nil {
		return err
	}
	store, err := g.open()
	if err != nil {
		return err
	}
	defer store.Close()
	vols, err := store.List(volumes.ListOptions{
		Namespace:     g.nsOrDefault(),
		AllNamespaces: o.allNamespaces,
		Size:          o.size && !o.quiet,
		Filter:        filter,
	})
	if err != nil {
		return err
	}
	if err := printer(vols); err != nil {
		return err
	}
	if !o.size || o.quiet || o.format != "" && o.format != "table" {
		return nil
	}
	totals, err := store.Stats().Totals()
	if err != nil {
		return err
	}
	return printTotals(s.out, totals)
}

// printTotals ends the table of ls -s with what the sizes of the node's
// sized volumes add up to against the store's file system: sparse images
// and qgroups reserve nothing, so the sizes may promise more than the disk
// holds, up to limits.overcommit times it.
func printTotals(out io.Writer, t volumes.SizeTotals) error {
	if t.Sized.Count == 0 {
		return nil
	}
	ratio := float64(t.Sized.Bytes) / float64(max(t.FileSystem, 1))
	bound := "no bound (limits.overcommit 0)"
	if t.Bound > 0 {
		bound = fmt.Sprintf("bound %s (limits.overcommit %g)", bytesize.FormatFixed(t.Bound), float64(t.Bound)/float64(max(t.FileSystem, 1)))
	}
	_, err := fmt.Fprintf(out, "Total sizes of the node's %d sized volume(s): %s on a %s file system, overcommit %.2fx, %s\n",
		t.Sized.Count, bytesize.FormatFixed(t.Sized.Bytes), bytesize.FormatFixed(t.FileSystem), ratio, bound)
	return err
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
	tmpl, err := parseTemplate(o.format)
	if err != nil {
		return nil, err
	}
	return func(vols []*volumes.Volume) error { return printTemplate(out, tmpl, vols) }, nil
}

// parseTemplate parses a --format template, with docker's json function.
func parseTemplate(format string) (*template.Template, error) {
	tmpl, err := template.New("format").Funcs(template.FuncMap{"json": toJSON}).Parse(format)
	if err != nil {
		return nil, fmt.Errorf("--format: %w", err)
	}
	return tmpl, nil
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
				s = bytesize.FormatFixed(*v.Size)
			}
			cols = append(cols, s)
		}
		if limits {
			limit := "-"
			if v.Limit > 0 {
				limit = bytesize.FormatFixed(v.Limit)
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
