package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// newInternal holds what the deployer runs inside its own helper containers (FROM scratch, so
// there is no shell): not for operators.
func newInternal(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "internal", Hidden: true}
	cmd.AddCommand(&cobra.Command{
		Use:  "clear-dir DIR",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			entries, err := os.ReadDir(args[0])
			if err != nil {
				return err
			}
			for _, e := range entries {
				if err := os.RemoveAll(filepath.Join(args[0], e.Name())); err != nil {
					return err
				}
			}
			fmt.Fprintf(g.stdout, "removed %d entries from %s\n", len(entries), args[0])
			return nil
		},
	})
	return cmd
}
