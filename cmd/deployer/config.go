package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

// load reads the configuration named by the arguments and flags. Errors are rendered on stderr
// with their source lines; the returned error then only sets the exit code.
func (g *globals) load(args []string) (*hclspec.Result, error) {
	opts := hclspec.Options{Files: g.files, Unknown: g.unknownVars}
	if !g.unknownVars { // validate reads nothing from the environment
		opts.Env = os.Environ()
	}
	if len(args) > 0 {
		opts.Dir = args[0]
	}
	vars, err := g.varArgs()
	if err != nil {
		return nil, err
	}
	opts.Vars = vars
	res, diags := watchedLoad(opts)
	if res.Project != nil {
		g.red = plan.NewRedactor(res.Project)
	}
	if len(diags) > 0 {
		g.writeDiagnostics(res, diags)
	}
	if diags.HasErrors() {
		n := 0
		for _, d := range diags {
			if d.Severity == hcl.DiagError {
				n++
			}
		}
		if !g.json {
			fmt.Fprintf(g.stderr, "The configuration has %s; nothing was changed.\n", plural(n, "error"))
		}
		return nil, failed
	}
	return res, nil
}

// session is what every command that reads a configuration starts from: the configuration
// loaded (its errors rendered), and a context that Ctrl-C or SIGTERM cancels, after which the
// command says it was interrupted and exits 128+signal. close releases the signal.
type session struct {
	ctx   context.Context
	res   *hclspec.Result
	close func()
}

// open is the commands' one preamble: load, then become interruptible.
func (g *globals) open(cmd *cobra.Command, dirArgs []string) (*session, error) {
	res, err := g.load(dirArgs)
	if err != nil {
		return nil, err
	}
	ctx, stop := g.interruptible(cmd.Context())
	return &session{ctx: ctx, res: res, close: stop}, nil
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

// Evaluating a configuration is bounded in memory and time: a configuration from a pull request
// runs in CI, where it must not be able to take the runner down. Functions and nesting are
// bounded where the value is built (hclspec); what is left, an expression that iterates over
// large collections, is watched here, as is fmt. Time is the process's CPU time, so that a
// busy runner (which slows the evaluation, not the configuration) does not change which bound
// a configuration meets; the wall clock is the backstop for one that blocks without computing.
// (Variables, so that a test can lower them.)
var (
	evalMemoryLimit int64 = 1 << 30
	evalTimeLimit         = 30 * time.Second
	evalWallLimit         = 5 * time.Minute
)

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// watchedLoad loads the configuration while watching the memory it takes and the time. Past
// either limit it gives up with an error that names the expression being evaluated, unless that
// one depends on a secret (which one was too large would tell something of it); the process
// then exits, which ends the evaluation.
func watchedLoad(opts hclspec.Options) (*hclspec.Result, hcl.Diagnostics) {
	var res *hclspec.Result
	var diags hcl.Diagnostics
	if d := watch("Evaluating the configuration", func() { res, diags = hclspec.Load(opts) }); d != nil {
		d.Detail += " an expression builds a collection or a string that large (a for expression over large collections, or nested ones). Nothing was changed."
		if r := hclspec.Evaluating(); r != nil {
			d.Subject = r
		}
		return &hclspec.Result{}, hcl.Diagnostics{d}
	}
	return res, diags
}

// watch runs f, which reads a configuration (Load, or fmt's Format), while watching the memory
// it takes and the time: past either limit it returns an error saying which (what took more
// than ...:), and f is left to the process's exit. A panic in f is an error too.
func watch(what string, f func()) *hcl.Diagnostic {
	done := make(chan any, 1)
	// Collect hard near the limit, so that what is measured is what f holds: a heap past 90%
	// of it, even so, is live data.
	prev := debug.SetMemoryLimit(evalMemoryLimit)
	defer debug.SetMemoryLimit(prev)
	go func() {
		defer func() { done <- recover() }()
		f()
	}()
	start, cpuStart := time.Now(), cpuTime()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	for {
		select {
		case p := <-done:
			if p != nil {
				return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Internal error",
					Detail: what + " failed (a defect of the deployer: please report it, with the configuration if you can share it). Nothing was changed."}
			}
			return nil
		case <-tick.C:
			metrics.Read(sample)
			heap := sample[0].Value.Uint64()
			over := ""
			switch {
			case heap > uint64(evalMemoryLimit)/10*9:
				over = fmt.Sprintf("more than %d MiB of memory", evalMemoryLimit>>20)
			case cpuTime()-cpuStart > evalTimeLimit:
				over = fmt.Sprintf("more than %s of CPU time", evalTimeLimit)
			case time.Since(start) > evalWallLimit:
				over = fmt.Sprintf("more than %s", evalWallLimit)
			}
			if over != "" {
				return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Configuration too large to evaluate",
					Detail: what + " took " + over + ":"}
			}
		}
	}
}
