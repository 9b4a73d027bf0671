package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

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
			n, err := clearDir(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "removed %d entries from %s\n", n, args[0])
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:  "prepare-volume DIR BYTES",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			need, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || need < 0 {
				return fmt.Errorf("prepare-volume: %q is not a byte count", args[1])
			}
			return prepareVolume(g, args[0], need)
		},
	})
	return cmd
}

// prepareVolume makes room for a restore: it fails, touching nothing, unless the volume's
// filesystem can hold need bytes once its current files are gone; then it removes them.
func prepareVolume(g *globals, dir string, need int64) error {
	var used int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				used += st.Blocks * 512
			}
		}
		return nil
	})
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("volume %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free+used < need {
		return fmt.Errorf("the volume's filesystem has %d bytes free and %d used by its current files, and the backup needs %d: nothing was removed; make room on the engine's disk", free, used, need)
	}
	n, err := clearDir(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "removed %d entries from %s; %d bytes free for %d\n", n, dir, free+used, need)
	return nil
}

func clearDir(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return 0, err
		}
	}
	return len(entries), nil
}
