// Command structure measures how the files of one Go package of this
// repository depend on each other, for issue 20's before and after. It is a
// module of its own so that the product does not depend on x/tools.
//
//	cd hack/structure && go run . -repo ../.. -pkg volumes -type Store -from plugin.Plugin.CreateContainer
//
// It prints:
//   - the largest set of the package's files whose functions call each other
//     in a loop (static calls; a closure counts as called where it is made,
//     since the store hands its work to its lock helpers as func literals);
//   - the same over references to any top-level name (types and fields
//     included), a stricter measure;
//   - the exported methods of -type;
//   - from -from, the files of the package its calls reach and the calls
//     that re-enter a file already on the call path;
//   - the functions of the product (the repository but test/) over 80 lines.
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"log"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/tools/go/packages"
	"golang.org/x/tools/go/ssa"
	"golang.org/x/tools/go/ssa/ssautil"
)

func main() {
	repo := flag.String("repo", "../..", "the repository's root")
	pkgName := flag.String("pkg", "volumes", "the package to measure, relative to the module")
	typeName := flag.String("type", "Store", "the type whose exported methods are counted")
	from := flag.String("from", "plugin.Plugin.CreateContainer", "the function whose calls are followed: pkg.Type.Method or pkg.Func")
	why := flag.Bool("why", false, "print the call or name behind each edge of the loops and each call back")
	flag.Parse()

	pkgs, err := packages.Load(&packages.Config{Mode: packages.LoadAllSyntax, Dir: *repo}, "./...")
	if err != nil {
		log.Fatal(err)
	}
	var target *packages.Package
	for _, p := range pkgs {
		if strings.HasSuffix(p.PkgPath, "/"+*pkgName) && !strings.Contains(strings.TrimSuffix(p.PkgPath, "/"+*pkgName), "/"+*pkgName) {
			target = p
		}
	}
	if target == nil {
		log.Fatalf("no package %s below %s", *pkgName, *repo)
	}
	prog, _ := ssautil.AllPackages(pkgs, ssa.InstantiateGenerics)
	prog.Build()
	m := measure{prog: prog, pkg: target, why: *why}

	calls := m.callEdges()
	loop, n := largestLoop(calls)
	fmt.Printf("files of %s in one loop of calls: %d of %d\n", *pkgName, len(loop), n)
	m.print("  in it", loop, calls)

	refs := m.refEdges()
	loop, n = largestLoop(refs)
	fmt.Printf("files of %s in one loop of references to top-level names: %d of %d\n", *pkgName, len(loop), n)
	m.print("  in it", loop, refs)

	methods := m.exportedMethods(*typeName)
	fmt.Printf("exported methods of %s: %d\n  %s\n", *typeName, len(methods), strings.Join(methods, " "))

	files, back := m.walk(*from)
	fmt.Printf("from %s: %d files of %s reached, %d calls back into a file already on the call path\n", *from, len(files), *pkgName, len(back))
	fmt.Printf("  reached: %s\n", strings.Join(files, " "))
	for _, b := range back {
		fmt.Printf("  back: %s\n", b)
	}

	fmt.Println("functions over 80 lines:")
	for _, l := range m.longFunctions(pkgs, 80) {
		fmt.Println("  " + l)
	}
}

type measure struct {
	prog *ssa.Program
	pkg  *packages.Package
	why  bool
}

// edges maps a file to the files it depends on, each with one example of why
// (the least in string order, so that -why prints the same every run).
type edges map[string]map[string]string

// add records that file a depends on file b, and both as files; "" (a test
// file, another package) records nothing of it.
func (e edges) add(a, b, why string) {
	if a == "" {
		return
	}
	if e[a] == nil {
		e[a] = map[string]string{}
	}
	if b == "" || a == b {
		return
	}
	// The least reason, not the first: the functions come from a map.
	if cur, ok := e[a][b]; !ok || why < cur {
		e[a][b] = why
	}
	if e[b] == nil {
		e[b] = map[string]string{}
	}
}

// sourceFile is the base name of the file at p, or "" for a test file.
func sourceFile(fset *token.FileSet, p token.Pos) string {
	name := fset.Position(p).Filename
	if strings.HasSuffix(name, "_test.go") {
		return ""
	}
	return filepath.Base(name)
}

// fileOf is the base name of the non-test file of the measured package that
// declares f (a closure: its outermost function), or "".
func (m *measure) fileOf(f *ssa.Function) string {
	if f == nil || f.Pkg == nil || f.Pkg.Pkg.Path() != m.pkg.PkgPath {
		return ""
	}
	for f.Parent() != nil {
		f = f.Parent()
	}
	if !f.Pos().IsValid() {
		return ""
	}
	return sourceFile(m.prog.Fset, f.Pos())
}

// callees are the functions f calls statically and the closures it makes.
func callees(f *ssa.Function) []*ssa.Function {
	var out []*ssa.Function
	for _, b := range f.Blocks {
		for _, ins := range b.Instrs {
			if c, ok := ins.(ssa.CallInstruction); ok {
				if g := c.Common().StaticCallee(); g != nil {
					out = append(out, g)
				}
			}
			if mc, ok := ins.(*ssa.MakeClosure); ok {
				out = append(out, mc.Fn.(*ssa.Function))
			}
		}
	}
	return out
}

func funcName(f *ssa.Function) string {
	if f.Pkg == nil {
		return f.Name()
	}
	n := f.Pkg.Pkg.Name() + "."
	if recv := f.Signature.Recv(); recv != nil {
		t := recv.Type().String()
		n += t[strings.LastIndex(t, ".")+1:] + "."
	}
	return n + f.Name()
}

func (m *measure) callEdges() edges {
	e := edges{}
	for _, f := range m.pkg.Syntax {
		e.add(sourceFile(m.prog.Fset, f.Pos()), "", "")
	}
	for f := range ssautil.AllFunctions(m.prog) {
		a := m.fileOf(f)
		if a == "" {
			continue
		}
		for _, g := range callees(f) {
			e.add(a, m.fileOf(g), funcName(f)+" -> "+funcName(g))
		}
	}
	return e
}

func (m *measure) refEdges() edges {
	e := edges{}
	fset, info, scope := m.pkg.Fset, m.pkg.TypesInfo, m.pkg.Types.Scope()
	file := func(p token.Pos) string { return sourceFile(fset, p) }
	ref := func(at token.Pos, obj types.Object) {
		if obj == nil || obj.Pkg() != m.pkg.Types || !obj.Pos().IsValid() {
			return
		}
		if obj.Parent() != nil && obj.Parent() != scope {
			return // a local name
		}
		e.add(file(at), file(obj.Pos()), obj.Name())
	}
	for _, f := range m.pkg.Syntax {
		e.add(file(f.Pos()), "", "")
	}
	for id, obj := range info.Uses {
		ref(id.Pos(), obj)
	}
	for sel, s := range info.Selections {
		ref(sel.Pos(), s.Obj())
	}
	return e
}

// largestLoop returns the largest strongly connected set of files of e, and
// how many files e has.
func largestLoop(e edges) ([]string, int) {
	var nodes []string
	for n := range e {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	index, low, on := map[string]int{}, map[string]int{}, map[string]bool{}
	var stack, best []string
	next := 0
	var visit func(v string)
	visit = func(v string) {
		index[v], low[v] = next, next
		next++
		stack = append(stack, v)
		on[v] = true
		for w := range e[v] {
			if _, ok := index[w]; !ok {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if on[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] != index[v] {
			return
		}
		var set []string
		for {
			w := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			on[w] = false
			set = append(set, w)
			if w == v {
				break
			}
		}
		if len(set) > len(best) {
			best = set
		}
	}
	for _, n := range nodes {
		if _, ok := index[n]; !ok {
			visit(n)
		}
	}
	sort.Strings(best)
	return best, len(nodes)
}

func (m *measure) print(label string, loop []string, e edges) {
	fmt.Printf("%s: %s\n", label, strings.Join(loop, " "))
	if !m.why {
		return
	}
	in := map[string]bool{}
	for _, f := range loop {
		in[f] = true
	}
	for _, a := range loop {
		var bs []string
		for b := range e[a] {
			if in[b] {
				bs = append(bs, b)
			}
		}
		sort.Strings(bs)
		for _, b := range bs {
			fmt.Printf("    %s -> %s (%s)\n", a, b, e[a][b])
		}
	}
}

func (m *measure) exportedMethods(typeName string) []string {
	obj := m.pkg.Types.Scope().Lookup(typeName)
	if obj == nil {
		return nil
	}
	mset := types.NewMethodSet(types.NewPointer(obj.Type()))
	var out []string
	for i := 0; i < mset.Len(); i++ {
		if f := mset.At(i).Obj(); f.Exported() {
			out = append(out, f.Name())
		}
	}
	sort.Strings(out)
	return out
}

// walk follows the calls from the function named from, depth first in the
// order of the code, and returns the files of the package it reaches and
// each call that enters a file already on the call path from another.
func (m *measure) walk(from string) ([]string, []string) {
	var start *ssa.Function
	for f := range ssautil.AllFunctions(m.prog) {
		if funcName(f) == from {
			start = f
		}
	}
	if start == nil {
		log.Fatalf("no function %s", from)
	}
	reached, back := map[string]bool{}, map[string]bool{}
	seen := map[*ssa.Function]bool{}
	var path []string
	enter := func(caller, callee *ssa.Function, file string) {
		if file == "" || len(path) == 0 || path[len(path)-1] == file {
			return
		}
		for _, p := range path {
			if p == file {
				k := path[len(path)-1] + " -> " + file
				if m.why {
					k += " (" + funcName(caller) + " -> " + funcName(callee) + ")"
				}
				back[k] = true
			}
		}
	}
	var visit func(caller, f *ssa.Function)
	visit = func(caller, f *ssa.Function) {
		seen[f] = true
		file := m.fileOf(f)
		pushed := false
		if file != "" {
			reached[file] = true
			enter(caller, f, file)
			if len(path) == 0 || path[len(path)-1] != file {
				path = append(path, file)
				pushed = true
			}
		}
		for _, g := range callees(f) {
			if !seen[g] {
				visit(f, g)
			} else {
				enter(f, g, m.fileOf(g))
			}
		}
		if pushed {
			path = path[:len(path)-1]
		}
	}
	visit(nil, start)
	return sorted(reached), sorted(back)
}

func sorted(set map[string]bool) []string {
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// longFunctions lists the functions of the non-test files of pkgs outside
// test/ longer than max lines, and whether their comment says why they stay
// one.
func (m *measure) longFunctions(pkgs []*packages.Package, max int) []string {
	var out []string
	for _, p := range pkgs {
		if strings.Contains(p.PkgPath, "/test/") {
			continue
		}
		for _, f := range p.Syntax {
			name := p.Fset.Position(f.Pos()).Filename
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				a, b := p.Fset.Position(fd.Pos()).Line, p.Fset.Position(fd.Body.End()).Line
				if b-a+1 <= max {
					continue
				}
				doc := strings.ToLower(fd.Doc.Text())
				reason := "NO comment says why it stays one function"
				if strings.Contains(doc, "one function") || strings.Contains(doc, "stays") {
					reason = "its comment says why"
				}
				rel, _ := filepath.Rel(filepath.Dir(filepath.Dir(name)), name)
				out = append(out, fmt.Sprintf("%s:%d %s, %d lines: %s", rel, a, fd.Name.Name, b-a+1, reason))
			}
		}
	}
	sort.Strings(out)
	return out
}
