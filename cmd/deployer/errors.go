package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

// Errors and warnings go to stderr, the plan and the results to stdout, so that `apply > log`
// still shows a failure on the terminal. With -json an error is a JSON object with the fields of
// the text: severity, summary, detail and, for the configuration's errors, the range.

// diagnostic is an error or warning as a JSON object.
type diagnostic struct {
	FormatVersion string     `json:"format_version"`
	Type          string     `json:"type"` // "diagnostic"
	Severity      string     `json:"severity"`
	Summary       string     `json:"summary"`
	Detail        string     `json:"detail,omitempty"`
	Range         *diagRange `json:"range,omitempty"`
}

type diagRange struct {
	Filename string  `json:"filename"`
	Start    diagPos `json:"start"`
	End      diagPos `json:"end"`
}

type diagPos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// fail says an error on stderr: "Error: MESSAGE", or with -json a diagnostic.
func (g *globals) fail(err error) {
	g.problem("error", g.say(g.red.Redact(err.Error())))
}

// problem says an error or a warning on stderr. With -json its first line is the summary and
// the rest the detail.
func (g *globals) problem(severity, msg string) {
	if g.json {
		summary, detail, _ := strings.Cut(msg, "\n")
		g.writeDiagnostic(diagnostic{Severity: severity, Summary: summary, Detail: strings.TrimSpace(detail)})
		return
	}
	label := "Error"
	if severity == "warning" {
		label = "Warning"
	}
	fmt.Fprintf(g.stderr, "%s: %s\n", label, terminalSafe(msg))
}

func (g *globals) writeDiagnostic(d diagnostic) {
	d.FormatVersion, d.Type = plan.FormatVersion, "diagnostic"
	b, _ := json.Marshal(d)
	fmt.Fprintf(g.stderr, "%s\n", b)
}

// writeDiagnostics says the configuration's errors and warnings on stderr: with the source line
// and the range marked, or with -json one object each.
func (g *globals) writeDiagnostics(res *hclspec.Result, diags hcl.Diagnostics) {
	if !g.json {
		res.WriteDiagnostics(g.stderr, diags, g.color(g.stderr))
		return
	}
	for _, d := range diags {
		out := diagnostic{Severity: "error", Summary: g.red.Redact(d.Summary), Detail: g.red.Redact(d.Detail)}
		if d.Severity == hcl.DiagWarning {
			out.Severity = "warning"
		}
		if r := d.Subject; r != nil {
			out.Range = &diagRange{Filename: r.Filename,
				Start: diagPos{Line: r.Start.Line, Column: r.Start.Column, Byte: r.Start.Byte},
				End:   diagPos{Line: r.End.Line, Column: r.End.Column, Byte: r.End.Byte}}
		}
		g.writeDiagnostic(out)
	}
}

// interruptible is ctx, cancelled by Ctrl-C (SIGINT) or SIGTERM. The signal is kept for the
// exit code (128 + its number: 130 for Ctrl-C) and the wording; signals after the first are
// caught and ignored, so that the clean-up they would cut short finishes.
func (g *globals) interruptible(parent context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-ch:
			if s, ok := sig.(syscall.Signal); ok {
				g.interrupted.CompareAndSwap(0, int32(s))
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		if g.signal() == 0 {
			signal.Stop(ch)
		}
		cancel()
	}
}

// signal is the signal that interrupted the command, 0 for none.
func (g *globals) signal() int { return int(g.interrupted.Load()) }

// say words a message for the user: once interrupted, what was cut short says so rather than
// "context canceled".
func (g *globals) say(s string) string {
	if g.signal() == 0 {
		return s
	}
	return strings.ReplaceAll(s, context.Canceled.Error(), "interrupted")
}

// flagError says what is wrong with a flag in the single-dash style of the README, with a
// suggestion for a mistyped name, and no Go internals.
func flagError(cmd *cobra.Command, err error) error {
	var notExist *pflag.NotExistError
	var needsValue *pflag.ValueRequiredError
	var invalid *pflag.InvalidValueError
	var syntax *pflag.InvalidSyntaxError
	switch {
	case errors.As(err, &notExist):
		name := notExist.GetSpecifiedName()
		if sh := notExist.GetSpecifiedShortnames(); sh != "" {
			name = sh
		}
		name, _, _ = strings.Cut(name, "=")
		return unknownFlag(cmd, name)
	case errors.As(err, &needsValue):
		f := needsValue.GetFlag()
		arg, _ := pflag.UnquoteUsage(f)
		return fmt.Errorf("-%s needs a value: -%s %s", f.Name, f.Name, arg)
	case errors.As(err, &invalid):
		f := invalid.GetFlag()
		switch f.Value.Type() {
		case "bool":
			return fmt.Errorf("-%s=%s: -%s is a switch: write -%s alone (or -%s=true, -%s=false)", f.Name, invalid.GetValue(), f.Name, f.Name, f.Name, f.Name)
		case "int", "int64":
			return fmt.Errorf("-%s %q: write a whole number, such as -%s 3", f.Name, invalid.GetValue(), f.Name)
		case "duration":
			return fmt.Errorf("-%s %q: write a duration, such as -%s 30s or 5m", f.Name, invalid.GetValue(), f.Name)
		}
		arg, _ := pflag.UnquoteUsage(f)
		return fmt.Errorf("-%s %q: write %s", f.Name, invalid.GetValue(), arg)
	case errors.As(err, &syntax):
		return fmt.Errorf("%s is not a flag: write flags as -name or -name=value", syntax.GetSpecifiedFlag())
	}
	return err
}

// unknownFlag names a flag the command does not take, with the one meant when the name is
// close to one (or the commands that take it).
func unknownFlag(cmd *cobra.Command, name string) error {
	help := fmt.Sprintf("`%s -h` lists its flags", cmd.CommandPath())
	if best := closest(name, flagNames(cmd)); best != "" {
		return fmt.Errorf("unknown flag -%s, did you mean -%s? (%s)", name, best, help)
	}
	var takers []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.Hidden && c != cmd && c.LocalNonPersistentFlags().Lookup(name) != nil {
			takers = append(takers, strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" "))
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cmd.Root())
	if len(takers) > 0 {
		return fmt.Errorf("unknown flag -%s: %s does not take it; %s (%s)", name, cmd.Name(), takenBy(takers), help)
	}
	return fmt.Errorf("unknown flag -%s (%s)", name, help)
}

// flagNames are the flags a command takes, its own and the common ones.
func flagNames(cmd *cobra.Command) []string {
	var names []string
	add := func(f *pflag.Flag) {
		if !f.Hidden {
			names = append(names, f.Name)
		}
	}
	cmd.Flags().VisitAll(add)
	cmd.InheritedFlags().VisitAll(add)
	return names
}

// closest is the name that a typed word most likely meant: the same but for dashes,
// underscores and case, else one within a small edit distance or that it starts; "" for none.
func closest(typed string, names []string) string {
	norm := func(s string) string { return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s)) }
	best, bestDist := "", 3
	sort.Strings(names)
	for _, n := range names {
		d := levenshtein.Distance(norm(typed), norm(n), nil)
		if len(typed) >= 3 && strings.HasPrefix(n, typed) {
			d = min(d, 1)
		}
		limit := 1
		if len(norm(typed)) >= 4 {
			limit = 2
		}
		if d < bestDist && d <= limit {
			best, bestDist = n, d
		}
	}
	return best
}

// groupRun is what a command that only groups others does: its help without arguments, an
// error naming the command meant for anything else.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	if best := closest(args[0], names); best != "" {
		return fmt.Errorf("unknown command %q, did you mean %s? (`%s -h` lists the commands)", args[0], strings.TrimPrefix(cmd.CommandPath()+" "+best, cmd.Root().Name()+" "), cmd.CommandPath())
	}
	return fmt.Errorf("unknown command %q (`%s -h` lists the commands)", args[0], cmd.CommandPath())
}

// argsBetween accepts from min to max arguments; fewer or more is an error that shows how the
// command is written. need names what is missing when there are too few.
func argsBetween(min, max int, need string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		usage := "usage: " + useLine(cmd)
		switch {
		case len(args) < min:
			return fmt.Errorf("%s needs %s; %s", cmd.CommandPath(), need, usage)
		case len(args) > max && max == 0:
			return fmt.Errorf("%s takes no arguments, and was given %s; %s", cmd.CommandPath(), quoteArgs(args), usage)
		case len(args) > max:
			return fmt.Errorf("%s takes at most %s, and was given %d: %s; %s", cmd.CommandPath(), plural(max, "argument"), len(args), quoteArgs(args), usage)
		}
		return nil
	}
}

// noArgs accepts no arguments.
var noArgs = argsBetween(0, 0, "")

func quoteArgs(args []string) string {
	var q []string
	for _, a := range args {
		q = append(q, fmt.Sprintf("%q", a))
	}
	return strings.Join(q, " ")
}

// takenBy says which commands take a flag: "apply takes it", "apply and destroy take it".
func takenBy(cmds []string) string {
	if len(cmds) == 1 {
		return cmds[0] + " takes it"
	}
	return strings.Join(cmds[:len(cmds)-1], ", ") + " and " + cmds[len(cmds)-1] + " take it"
}
