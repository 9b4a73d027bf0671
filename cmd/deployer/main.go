// Command deployer deploys Docker services blue-green from a declarative HCL file: `deployer plan`
// shows what would change, `deployer apply` carries it out. This package parses flags, renders
// and sets exit codes; the logic lives in hclspec and executor.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/deployer-dev/deployer/executor/plan"
)

func main() { os.Exit(main1()) }

// exitError carries an exit code; its message, if any, has been printed already.
type exitError struct {
	code int
	live bool // what is live was said too (the last line of a failed apply)
}

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// failed is returned once diagnostics or an error were printed: exit 1, nothing more to say.
var failed = exitError{code: 1}

// failedLive is failed once what is live was said as well.
var failedLive = exitError{code: 1, live: true}

// main1 runs the command line and returns the exit code, keeping os.Exit out of the logic.
func main1() int {
	return run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root, g := newRoot(stdin, stdout, stderr)
	g.args = normalizeArgs(root, args)
	for _, a := range g.args {
		if a == "--" {
			break
		}
		g.json = g.json || a == "--json" || a == "--json=true" // errors in the flags are JSON too
	}
	root.SetArgs(g.args)
	err := root.Execute()
	code := 0
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
	default:
		g.fail(err)
		code = 1
	}
	if sig := g.signal(); sig != 0 && code != 0 {
		return 128 + sig // as shells report a command a signal ended: 130 for Ctrl-C
	}
	return code
}

// globals are the flags every command that reads a configuration takes.
type globals struct {
	vars        []string
	varFiles    []string
	files       []string
	chdir       string
	noColor     bool
	lockTimeout string
	version     bool

	unknownVars    bool           // validate: required variables without a value are unknown
	args           []string       // as given, for the order of -var and -var-file
	red            *plan.Redactor // the loaded configuration's secrets, masked in what is printed
	json           bool           // the command was given -json: errors are JSON objects too
	stdin          io.Reader
	stdout, stderr io.Writer
	interrupted    atomic.Int32 // the signal that interrupted the command, 0 for none
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) (*cobra.Command, *globals) {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "deployer",
		Short: "Blue-green deploys of Docker services from a declarative HCL file",
		Long: `deployer deploys Docker services blue-green from a declarative HCL configuration (every *.hcl
file of a directory): plan shows what would change and the steps apply would run; apply starts
the new release beside the live one, checks it, backs up its data, cuts over, and rolls back by
itself when anything fails. It keeps no state file: what runs is read back from the engine.`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRun,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if f := cmd.Flags().Lookup("json"); f != nil && f.Value.String() == "true" {
				g.json = true
			}
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
	root.SetVersionTemplate(versionLine() + "\n")
	root.SetFlagErrorFunc(flagError)
	root.CompletionOptions.HiddenDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringArrayVar(&g.vars, "var", nil, "set a variable: -var `NAME=VALUE` (repeatable)")
	pf.StringArrayVar(&g.varFiles, "var-file", nil, "read variables from `FILE` (repeatable)")
	pf.StringArrayVarP(&g.files, "file", "f", nil, "read the configuration `FILE` instead of the directory (repeatable)")
	pf.StringVar(&g.chdir, "chdir", "", "switch to `DIR` before anything else")
	pf.BoolVar(&g.noColor, "no-color", false, "no colors in the output (NO_COLOR is honoured too)")
	pf.StringVar(&g.lockTimeout, "lock-timeout", "0s", "how long to wait for the deploy lock (a `DURATION` such as 5m)")
	root.Flags().BoolVar(&g.version, "version", false, "print the deployer's version")
	validate := newValidate(g)
	validate.Long = `Check the configuration in DIR (default: the current directory), or the files -f names: syntax,
types, references, values. It needs no Docker engine and reads nothing but the files.`
	validate.Args = argsBetween(0, 1, "")
	exitCodes(validate, exitReadOnly+" (the configuration has errors)")
	root.AddCommand(
		validate,
		newFmt(g),
		newPlan(g),
		newApply(g),
		newDestroy(g),
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
	setHelp(root)
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
// rewriting them to the double dash that the flag library expects: every -NAME of more than one
// letter, so that a mistyped one is reported by its name (with a suggestion), not as a cluster
// of one-letter flags. Negative numbers, and everything after "--", stay as they are.
func normalizeArgs(root *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(a) > 2 && !isNumber(a[1:]) {
			a = "-" + a
		}
		out = append(out, a)
	}
	return out
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
