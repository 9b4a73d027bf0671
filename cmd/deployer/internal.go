package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/migrate"
)

// newInternal holds what the deployer runs inside its own helper containers (FROM scratch, so
// there is no shell): not for operators.
func newInternal(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "internal", Hidden: true, Args: cobra.ArbitraryArgs, RunE: groupRun}
	cmd.AddCommand(&cobra.Command{
		// The preflight check of a remote engine: run on its host's network, it tries to listen
		// on each address and says which are in use.
		Use:  "bind-check ADDR...",
		Args: argsBetween(1, 1<<20, "addresses (host:port)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return json.NewEncoder(g.stdout).Encode(executor.CheckBinds(args))
		},
	})
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
		// A restore's look at the volumes it will fill, before anything is backed up or
		// stopped: the room of their filesystems and what their files take. It only looks.
		Use:  "volume-room DIR...",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return json.NewEncoder(g.stdout).Encode(executor.MeasureVolumes(args))
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:  "prepare-volume DIR BYTES [INODES]",
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			need, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || need < 0 {
				return fmt.Errorf("prepare-volume: %q is not a byte count", args[1])
			}
			var inodes int64
			if len(args) == 3 {
				if inodes, err = strconv.ParseInt(args[2], 10, 64); err != nil || inodes < 0 {
					return fmt.Errorf("prepare-volume: %q is not a count of inodes", args[2])
				}
			}
			return prepareVolume(g, args[0], need, inodes)
		},
	})
	cmd.AddCommand(&cobra.Command{
		// A held migration's put-back: the database's volume made again from its safety copy.
		Use:  "restore-volume SAFETY DST",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(args[0]); err != nil {
				return fmt.Errorf("restore-volume: the safety copy: %w", err)
			}
			if _, err := clearDir(args[1]); err != nil {
				return err
			}
			if _, err := backup.CloneVolume(cmd.Context(), args[0], args[1], nil, snapshotAs); err != nil {
				return err
			}
			return json.NewEncoder(g.stdout).Encode(cloneReport{Bytes: dirBytes(args[1])})
		},
	})
	cmds := snapshotCommands(g)
	for _, c := range cmds {
		if strings.HasPrefix(c.Use, "clone-volume") {
			c.Flags().Bool("missing-ok", false, "clone a missing database as missing instead of failing")
		}
	}
	cmd.AddCommand(cmds...)
	return cmd
}

// prepareVolume makes room for a restore: it fails, touching nothing, unless the volume's
// filesystem can hold need bytes and inodes files once its current files are gone; then it
// removes them. A refusal says, on a line of its own, that nothing was removed
// ({"untouched":true}): the restore then puts nothing back into a volume it never emptied.
func prepareVolume(g *globals, dir string, need, inodes int64) error {
	r := executor.MeasureVolume(dir)
	refuse := func(format string, args ...any) error {
		fmt.Fprintln(g.stdout, `{"untouched":true}`)
		return fmt.Errorf(format, args...)
	}
	if r.Error != "" {
		return refuse("volume %s: %s", dir, r.Error)
	}
	if r.FreeBytes+r.UsedBytes < need {
		return refuse("the volume's filesystem has %d bytes free and %d used by its current files, and the backup needs %d: nothing was removed; make room on the engine's disk", r.FreeBytes, r.UsedBytes, need)
	}
	if r.FreeInodes >= 0 && r.FreeInodes+r.UsedInodes < inodes {
		return refuse("the volume's filesystem has %d inodes free and %d used by its current files, and the backup makes %d files: nothing was removed; make room on the engine's disk", r.FreeInodes, r.UsedInodes, inodes)
	}
	n, err := clearDir(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "removed %d entries from %s; %d bytes free for %d\n", n, dir, r.FreeBytes+r.UsedBytes, need)
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

// snapshotCommands are the helper's online SQLite snapshots: the parent (root in the helper)
// sizes the volumes and runs one child per database as the database's owner.
func snapshotCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{{
		Use:  "sqlite-snapshot OUT (VOLUME_DIR DB_PATH)...",
		Args: cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args)%2 != 1 {
				return fmt.Errorf("sqlite-snapshot: give OUT, then pairs of a volume directory and a database path")
			}
			var vols []backup.SnapshotVolume
			at := map[string]int{}
			for i := 1; i < len(args); i += 2 {
				j, ok := at[args[i]]
				if !ok {
					j = len(vols)
					at[args[i]] = j
					vols = append(vols, backup.SnapshotVolume{Dir: args[i]})
				}
				if args[i+1] != "" {
					vols[j].DBs = append(vols[j].DBs, args[i+1])
				}
			}
			rep, err := backup.SnapshotDBs(cmd.Context(), args[0], vols, snapshotAs)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(rep)
			return os.WriteFile(filepath.Join(args[0], "result.json"), b, 0o644)
		},
	}, {
		// The migration dry-run's look at a database (issue 11): its schema and quick_check, one
		// JSON line per file, so that the deployer diffs the live copy and the migrated one
		// without copying either out of the engine.
		Use:  "sqlite-schema FILE...",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			enc := json.NewEncoder(g.stdout)
			for _, file := range args {
				out := schemaReport{File: file, QuickCheck: "ok"}
				if _, err := os.Lstat(file); errors.Is(err, fs.ErrNotExist) {
					out.Missing, out.QuickCheck = true, "missing" // a first deploy's database
				} else if err := backup.QuickCheck(cmd.Context(), file); err != nil {
					out.QuickCheck = err.Error()
				} else if out.Schema, err = migrate.Read(cmd.Context(), file); err != nil {
					out.Error = err.Error()
				}
				if err := enc.Encode(out); err != nil {
					return err
				}
			}
			return nil
		},
	}, {
		// The migration dry-run's copy of a database's volume (issue 11): its databases from
		// online snapshots, its other files as they are; the source is only read.
		Use:  "clone-volume [-missing-ok] SRC DST [DB_PATH...]",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dbs := args[2:]
			if ok, _ := cmd.Flags().GetBool("missing-ok"); ok {
				// A database not created yet (a first deploy) is cloned as missing.
				dbs = nil
				for _, p := range args[2:] {
					if _, err := os.Lstat(filepath.Join(args[0], p)); err == nil {
						dbs = append(dbs, p)
					}
				}
			}
			snaps, err := backup.CloneVolume(cmd.Context(), args[0], args[1], dbs, snapshotAs)
			if err != nil {
				return err
			}
			return json.NewEncoder(g.stdout).Encode(cloneReport{Snapshots: snaps, Bytes: dirBytes(args[1])})
		},
	}, {
		Use:  "sqlite-snapshot-one SRC DST",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			snap, err := backup.SnapshotDB(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return json.NewEncoder(g.stdout).Encode(snap)
		},
	}}
}

// cloneReport is what clone-volume says of a clone: each database's snapshot, and the bytes
// the clone holds.
type cloneReport struct {
	Snapshots []backup.DBSnapshot `json:"snapshots"`
	Bytes     int64               `json:"bytes"`
}

// dirBytes is the size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// schemaReport is what sqlite-schema says of one database file.
type schemaReport struct {
	File       string          `json:"file"`
	QuickCheck string          `json:"quick_check"` // "ok", "missing", or what is wrong
	Missing    bool            `json:"missing,omitempty"`
	Schema     *migrate.Schema `json:"schema,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// snapshotAs snapshots a database as the user that owns it (in-process when that is already
// who runs, or when this process cannot change user).
func snapshotAs(uid, gid int, src, dst string) (*backup.DBSnapshot, error) {
	if os.Getuid() != 0 || uid == os.Getuid() && gid == os.Getgid() {
		return backup.SnapshotDB(context.Background(), src, dst)
	}
	var stdout, stderr bytes.Buffer
	c := exec.Command("/proc/self/exe", "internal", "sqlite-snapshot-one", src, dst)
	c.Stdout, c.Stderr = &stdout, &stderr
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if err := c.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		msg = strings.TrimPrefix(msg, "Error: ")
		if msg == "" {
			msg = err.Error()
		}
		return nil, errors.New(msg)
	}
	var snap backup.DBSnapshot
	if err := json.Unmarshal(stdout.Bytes(), &snap); err != nil {
		return nil, fmt.Errorf("the snapshot child said %q", strings.TrimSpace(stdout.String()))
	}
	return &snap, nil
}
