package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newValidate(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate [DIR]",
		Short: "Check the configuration; no Docker needed",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := g.load(args)
			if err != nil {
				return err
			}
			p := res.Project
			fmt.Fprintf(g.stdout, "The configuration is valid: project %q, %s.\n", p.Name, plural(len(p.Services), "service"))
			return nil
		},
	}
}
