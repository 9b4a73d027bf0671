package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Each command's help says what it does (its Long text), how it is written, its flags in the
// single-dash style the README uses, and its exit codes.

// Exit codes, as help shows them.
const (
	exitPlain     = "0 success; 1 error; 130 interrupted (Ctrl-C)"
	exitChanges   = "0 success; 1 error (what is live is the last line); 130 interrupted (Ctrl-C): the live release keeps serving"
	exitReadOnly  = "0 success; 1 error"
	exitAnnotated = "exit"
)

// exitCodes sets what help says of a command's exit codes.
func exitCodes(cmd *cobra.Command, codes string) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[exitAnnotated] = codes
	return cmd
}

const usageTemplate = `Usage:{{if and .Runnable (not .HasAvailableSubCommands)}}
  {{useLine .}}{{end}}{{if .HasAvailableSubCommands}}
  {{.CommandPath}} COMMAND [flags]

Commands:{{range .Commands}}{{if .IsAvailableCommand}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{end}}{{if .HasAvailableLocalFlags}}

Flags:
{{flagUsages .LocalFlags}}{{end}}{{if .HasAvailableInheritedFlags}}

Common flags:
{{flagUsages .InheritedFlags}}{{end}}{{with exitCodesOf .}}

Exit codes: {{.}}{{end}}{{if .HasAvailableSubCommands}}

Run "{{.CommandPath}} COMMAND -h" for a command's help.{{end}}

`

// setHelp gives every command the deployer's help: single-dash flags, exit codes.
func setHelp(root *cobra.Command) {
	cobra.AddTemplateFunc("useLine", useLine)
	cobra.AddTemplateFunc("flagUsages", flagUsages)
	cobra.AddTemplateFunc("exitCodesOf", func(c *cobra.Command) string { return c.Annotations[exitAnnotated] })
	root.SetUsageTemplate(usageTemplate)
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [COMMAND]",
		Short: "Help about any command",
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return groupRun(c.Root(), args)
			}
			return cmd.Help()
		},
	})
}

// useLine is how a command is written: its path, then its arguments and main flags as its Use
// gives them.
func useLine(c *cobra.Command) string {
	rest := strings.TrimPrefix(c.Use, c.Name())
	return c.CommandPath() + rest
}

// flagUsages lists flags as they are typed (-auto-approve, -var NAME=VALUE), one a line, with
// what they do and their default.
func flagUsages(fs *pflag.FlagSet) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		arg, usage := pflag.UnquoteUsage(f)
		name := "-" + f.Name
		if f.Shorthand != "" {
			name = "-" + f.Shorthand + ", " + name
		}
		if arg != "" && f.Value.Type() != "bool" {
			name += " " + arg
		}
		if def := f.DefValue; def != "" && def != "false" && def != "[]" && def != "0" && def != "0s" {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintf(tw, "  %s\t%s\n", name, usage)
	})
	tw.Flush()
	return strings.TrimRight(b.String(), "\n")
}
