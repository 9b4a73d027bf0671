package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/pflag"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/hclspec"
)

type pflagFlag = pflag.Flag

// load reads the configuration named by the arguments and flags. Errors are rendered on stderr
// with their source lines; the returned error then only sets the exit code.
func (g *globals) load(args []string) (*hclspec.Result, error) {
	opts := hclspec.Options{Files: g.files, Env: os.Environ()}
	if len(args) > 0 {
		opts.Dir = args[0]
	}
	vars, err := g.varArgs()
	if err != nil {
		return nil, err
	}
	opts.Vars = vars
	res, diags := hclspec.Load(opts)
	if res.Project != nil {
		g.red = executor.NewRedactor(res.Project)
	}
	if len(diags) > 0 {
		res.WriteDiagnostics(g.stderr, diags, g.color(g.stderr))
	}
	if diags.HasErrors() {
		n := 0
		for _, d := range diags {
			if d.Severity == hcl.DiagError {
				n++
			}
		}
		fmt.Fprintf(g.stderr, "The configuration has %s; nothing was changed.\n", plural(n, "error"))
		return nil, failed
	}
	return res, nil
}

// varArgs keeps -var and -var-file in command-line order, since later ones win. pflag keeps
// each flag's values separately, so the order is read back from the raw arguments.
func (g *globals) varArgs() ([]hclspec.VarArg, error) {
	var out []hclspec.VarArg
	vi, fi := 0, 0
	for _, a := range g.args {
		switch {
		case isFlag(a, "var") && vi < len(g.vars):
			v, err := parseVar(g.vars[vi])
			if err != nil {
				return nil, err
			}
			out = append(out, v)
			vi++
		case isFlag(a, "var-file") && fi < len(g.varFiles):
			out = append(out, hclspec.VarArg{File: g.varFiles[fi]})
			fi++
		}
	}
	// Values not matched to raw arguments (e.g. when called from tests): append in flag order.
	for ; fi < len(g.varFiles); fi++ {
		out = append(out, hclspec.VarArg{File: g.varFiles[fi]})
	}
	for ; vi < len(g.vars); vi++ {
		v, err := parseVar(g.vars[vi])
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func isFlag(arg, name string) bool {
	if !strings.HasPrefix(arg, "-") {
		return false
	}
	arg = strings.TrimLeft(arg, "-")
	return arg == name || strings.HasPrefix(arg, name+"=")
}

func parseVar(s string) (hclspec.VarArg, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(name) == "" {
		return hclspec.VarArg{}, fmt.Errorf("-var %q: write it as -var name=value", s)
	}
	return hclspec.VarArg{Name: strings.TrimSpace(name), Value: value}, nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
