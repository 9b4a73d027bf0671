package hclspec

import (
	"fmt"
	"sort"
	"strings"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/deployer-dev/deployer/config"
)

// evalLocals evaluates every local in dependency order; a cycle is an error naming its members.
func (l *loader) evalLocals(blocks []*hcl.Block) hcl.Diagnostics {
	ev := &localsEval{l: l, defs: map[string]*hcl.Attribute{}, bad: map[string]bool{}, state: map[string]int{}}
	for _, b := range blocks {
		attrs, d := b.Body.JustAttributes()
		ev.diags = append(ev.diags, d...)
		for _, attr := range sortedAttrs(attrs) {
			if first, ok := ev.defs[attr.Name]; ok {
				ev.diags = append(ev.diags, duplicate("local."+attr.Name, attr.NameRange, first.NameRange))
				continue
			}
			ev.defs[attr.Name] = attr
		}
	}
	l.locals = map[string]cty.Value{}
	names := make([]string, 0, len(ev.defs))
	for n := range ev.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	// Check references first so an undefined one is reported at the reference, not as a failure
	// to evaluate.
	for _, n := range names {
		d := l.checkRefs(ev.defs[n].Expr, false, names)
		if d.HasErrors() {
			ev.bad[n] = true
			ev.diags = append(ev.diags, d...)
		}
	}
	for _, n := range names {
		ev.visit(n)
	}
	return ev.diags
}

// localsEval evaluates locals in the order of their references, depth first, and finds cycles.
type localsEval struct {
	l     *loader
	defs  map[string]*hcl.Attribute
	bad   map[string]bool // failed, or depends on one that failed
	state map[string]int
	stack []string
	diags hcl.Diagnostics
}

const (
	unvisited = iota
	visiting
	visited
)

// visit evaluates a local after those it refers to, and reports whether it has a value.
func (ev *localsEval) visit(name string) bool {
	switch ev.state[name] {
	case visited:
		return !ev.bad[name]
	case visiting:
		ev.cycle(name)
		return false
	}
	ev.state[name] = visiting
	ev.stack = append(ev.stack, name)
	ok := !ev.bad[name]
	attr := ev.defs[name]
	for _, tr := range attr.Expr.Variables() {
		if tr.RootName() != "local" || len(tr) < 2 {
			continue
		}
		if dep := attrName(tr[1]); ev.defs[dep] != nil && !ev.visit(dep) {
			ok = false
		}
	}
	ev.stack = ev.stack[:len(ev.stack)-1]
	ev.state[name] = visited
	if !ok {
		ev.bad[name] = true
		return false
	}
	ctx := ev.l.evalContext(false)
	val, d := ev.l.evaluate(attr.Expr, ctx)
	ev.diags = append(ev.diags, d...)
	if d.HasErrors() {
		ev.bad[name] = true
		return false
	}
	ev.l.locals[name] = ev.l.markSensitive(val, attr.Expr, ctx)
	return true
}

// cycle reports the circle of references that leads back to name.
func (ev *localsEval) cycle(name string) {
	i := indexOf(ev.stack, name)
	cycle := append(append([]string{}, ev.stack[i:]...), name)
	for j := range cycle {
		cycle[j] = "local." + cycle[j]
	}
	ev.diags = append(ev.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cycle in locals",
		Detail:  fmt.Sprintf("These locals refer to each other in a circle: %s. Break the circle by computing one of them from variables only.", strings.Join(cycle, " -> ")),
		Subject: ev.defs[name].NameRange.Ptr()})
	for _, c := range ev.stack[i:] {
		ev.bad[c] = true
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// checkRefs reports every reference in expr to something that does not exist, at the reference.
// localNames is nil once locals are evaluated (then l.locals is the truth).
func (l *loader) checkRefs(expr hcl.Expression, storesAllowed bool, localNames []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if localNames == nil {
		for n := range l.locals {
			localNames = append(localNames, n)
		}
	}
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		rng := tr.SourceRange()
		var names []string
		var kind string
		switch root {
		case "var":
			names, kind = l.varNames(), "input variable"
		case "local":
			names, kind = localNames, "local value"
		case "backup_store":
			if !storesAllowed {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Reference not allowed here",
					Detail: "backup_store.* may be used in services, not in locals or variables.", Subject: &rng})
				continue
			}
			for n := range l.stores {
				names = append(names, n)
			}
			kind = "backup store"
		case "engine":
			if !storesAllowed {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Reference not allowed here",
					Detail: "engine.* may be used in services, not in locals or variables.", Subject: &rng})
				continue
			}
			names = []string{config.DefaultEngine}
			for n := range l.engines {
				names = append(names, n)
			}
			kind = "engine"
		default:
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unknown reference",
				Detail:  fmt.Sprintf("There is nothing called %q here. References are var.NAME, local.NAME, backup_store.NAME and engine.NAME.%s", root, suggest(root, []string{"var", "local", "backup_store", "engine"})),
				Subject: &rng})
			continue
		}
		if len(tr) < 2 || attrName(tr[1]) == "" {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Incomplete reference",
				Detail: fmt.Sprintf("%s must be followed by a name, as in %s.NAME.", root, root), Subject: &rng})
			continue
		}
		name := attrName(tr[1])
		if indexOf(names, name) < 0 {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Reference to undeclared " + kind,
				Detail:  fmt.Sprintf("No %s named %q is declared.%s Declare it, or fix the name.", kind, name, suggest(name, names)),
				Subject: &rng})
		}
	}
	return diags
}

// suggest returns ` Did you mean "x"?` for the closest name, or "".
func suggest(given string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if d := levenshtein.Distance(given, n, nil); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}
