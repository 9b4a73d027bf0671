// Command deployer deploys Docker services blue-green from a declarative HCL file: `deployer plan`
// shows what would change, `deployer apply` carries it out. This package parses flags, renders
// and sets exit codes; the logic lives in hclspec and executor.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/deployer-dev/deployer/executor"
)

func main() { os.Exit(main1()) }

// exitError carries an exit code; its message, if any, has been printed already.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// failed is returned once diagnostics or an error were printed: exit 1, nothing more to say.
var failed = exitError{1}

// main1 runs the command line and returns the exit code, keeping os.Exit out of the logic.
func main1() int {
	return run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root, g := newRoot(stdin, stdout, stderr)
	g.args = normalizeArgs(root, args)
	root.SetArgs(g.args)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintf(stderr, "Error: %s\n", terminalSafe(g.red.Redact(err.Error())))
		return 1
	}
}

// globals are the flags every command that reads a configuration takes.
type globals struct {
	vars        []string
	varFiles    []string
	files       []string
	chdir       string
	noColor     bool
	lockTimeout string

	unknownVars    bool               // validate: required variables without a value are unknown
	args           []string           // as given, for the order of -var and -var-file
	red            *executor.Redactor // the loaded configuration's secrets, masked in what is printed
	stdin          io.Reader
	stdout, stderr io.Writer
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) (*cobra.Command, *globals) {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "deployer",
		Short:         "Blue-green deploys of Docker services from a declarative HCL file",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.chdir != "" {
				if err := os.Chdir(g.chdir); err != nil {
					return fmt.Errorf("-chdir %s: %w", g.chdir, err)
				}
			}
			return nil
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringArrayVar(&g.vars, "var", nil, "set a variable: -var `NAME=VALUE` (repeatable)")
	pf.StringArrayVar(&g.varFiles, "var-file", nil, "read variables from `FILE` (repeatable)")
	pf.StringArrayVarP(&g.files, "file", "f", nil, "read the configuration `FILE` instead of the directory (repeatable)")
	pf.StringVar(&g.chdir, "chdir", "", "switch to `DIR` before anything else")
	pf.BoolVar(&g.noColor, "no-color", false, "no colors in the output (NO_COLOR is honoured too)")
	pf.StringVar(&g.lockTimeout, "lock-timeout", "0s", "how long to wait for the deploy lock (a `DURATION` such as 5m)")
	root.AddCommand(
		newValidate(g),
		newFmt(g),
		newPlan(g),
		newApply(g),
		newStatus(g),
		newReleases(g),
		newRollback(g),
		newUnlock(g),
		newBackup(g),
		newBackups(g),
		newInternal(g),
		newProxy(g),
		newVersion(g),
	)
	return root, g
}

// color reports whether output to w may be colored.
func (g *globals) color(w io.Writer) bool {
	if g.noColor || os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// normalizeArgs accepts Terraform's single-dash long flags (-var, -out, -auto-approve) by
// rewriting them to the double dash that the flag library expects. Only names of real flags are
// rewritten, and nothing after "--".
func normalizeArgs(root *cobra.Command, args []string) []string {
	known := map[string]bool{}
	var collect func(c *cobra.Command)
	collect = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflagFlag) { known[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflagFlag) { known[f.Name] = true })
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(a) > 2 {
			name, _, _ := strings.Cut(a[1:], "=")
			if known[name] {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}
