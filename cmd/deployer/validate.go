package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newValidate(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate [DIR]",
		Short: "Check the configuration; no Docker needed",
		Long: `Check the configuration: syntax, types, references, variables' validation rules and the
semantic checks, without Docker and without contacting anything. A required variable without a
value is checked as an unknown value of its type (CI validates a pull request without its
secrets); the checks that need its value are left to plan and apply.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g.unknownVars = true
			res, err := g.load(args)
			if err != nil {
				return err
			}
			p := res.Project
			name := fmt.Sprintf("project %q", p.Name)
			if !p.Known("project") {
				name = "the project (its name comes from a variable without a value)"
			}
			without := ""
			if len(res.Unknown) > 0 {
				without = fmt.Sprintf(" (checked without a value for %s)", strings.Join(res.Unknown, ", "))
			}
			fmt.Fprintf(g.stdout, "The configuration is valid: %s, %s%s.\n", name, plural(len(p.Services), "service"), without)
			return nil
		},
	}
}
