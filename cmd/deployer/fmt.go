package main

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/hclspec"
)

func newFmt(g *globals) *cobra.Command {
	var check bool
	cmd := &cobra.Command{
		Use:   "fmt [-check] [DIR|FILE...]",
		Short: "Rewrite configuration files in canonical HCL style",
		Long: `Rewrite the configuration files of DIR (default: the current directory), or the FILEs named,
in canonical HCL style, and list those it changed. -check only lists them (CI).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := hclspec.FormatFiles(args)
			if err != nil {
				return err
			}
			changed, broken := 0, 0
			for _, f := range files {
				src, err := hclspec.ReadSource(f)
				if err != nil {
					return err
				}
				// Bounded as validate is: fmt -check runs on pull requests from forks.
				var out []byte
				var diags hcl.Diagnostics
				if d := watch("Formatting "+hclspec.DisplayName(f), func() { out, diags = hclspec.Format(src, f) }); d != nil {
					// The formatting goes on until the process exits: stop here.
					d.Summary = "File too large to format"
					d.Detail += " the file nests or repeats too much. Nothing more was written."
					hclspec.NewSourceResult(nil).WriteDiagnostics(g.stderr, hcl.Diagnostics{d}, g.color(g.stderr))
					return failed
				}
				if diags.HasErrors() {
					hclspec.NewSourceResult(map[string][]byte{f: src}).WriteDiagnostics(g.stderr, diags, g.color(g.stderr))
					broken++
					continue
				}
				if !hclspec.Changed(src, out) {
					continue
				}
				changed++
				fmt.Fprintln(g.stdout, hclspec.DisplayName(f))
				if check {
					continue
				}
				if err := hclspec.WriteSource(f, out); err != nil {
					return err
				}
			}
			if broken > 0 {
				fmt.Fprintf(g.stderr, "%s could not be formatted: fix the syntax errors above first.\n", plural(broken, "file"))
				return failed
			}
			if check && changed > 0 {
				fmt.Fprintf(g.stderr, "%s not in canonical style; run `deployer fmt` to rewrite.\n", plural(changed, "file"))
				return exitError{code: 3}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&check, "check", false, "list the files that would change and exit non-zero, without writing")
	return exitCodes(cmd, "0 success; 1 error (a file that does not parse); 3 with -check: files not in canonical style")
}
