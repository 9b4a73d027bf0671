package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/hclspec"
)

// withApplier loads the configuration and runs fn with an applier on its engine.
func (g *globals) withApplier(cmd *cobra.Command, dirArgs []string, asJSON bool, fn func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error) error {
	res, err := g.load(dirArgs)
	if err != nil {
		return err
	}
	eng, err := g.engine(res.Project)
	if err != nil {
		return err
	}
	defer eng.Close()
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := newRenderer(g.stdout, asJSON, g.color(g.stdout))
	defer r.close()
	a, err := g.applier(res.Project, eng, r.event)
	if err != nil {
		return err
	}
	if err := fn(ctx, res, a, r); err != nil {
		var code exitError
		if errors.As(err, &code) {
			return err // said already
		}
		r.close()
		r.final("Error: " + err.Error())
		return failed
	}
	return nil
}

func newBackup(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backup [DIR] service.NAME",
		Short: "Back up a service's volumes now",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, err := serviceArg(args)
			if err != nil {
				return err
			}
			return g.withApplier(cmd, dirArgs, asJSON, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
				m, err := a.Backup(ctx, service)
				if err != nil {
					return err
				}
				r.close()
				r.final(fmt.Sprintf("service.%s: backup %s of release %d is complete.", service, m.ID, m.Release))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON event per line")
	return cmd
}

func newBackups(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "backups", Short: "List, verify and restore the backups of a service"}
	var asJSON, autoApprove bool
	list := &cobra.Command{
		Use:   "list [DIR] service.NAME",
		Short: "The backups of a service: time, release, size, verified",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, err := serviceArg(args)
			if err != nil {
				return err
			}
			res, err := g.load(dirArgs)
			if err != nil {
				return err
			}
			s := res.Project.Service(service)
			if s == nil || s.Backup == nil {
				return fmt.Errorf("service.%s has no backup block in the configuration", service)
			}
			store, err := executor.OpenStore(cmd.Context(), res.Project, s.Backup.Store)
			if err != nil {
				return err
			}
			l, err := backup.List(cmd.Context(), store, res.Project.Name, service)
			if err != nil {
				return err
			}
			if asJSON {
				if l.Complete == nil {
					l.Complete = []*backup.Manifest{}
				}
				return writeJSON(g, map[string]any{"format_version": executor.FormatVersion, "service": service, "store": store.String(), "backups": l.Complete, "incomplete": l.Incomplete})
			}
			if len(l.Complete) == 0 {
				fmt.Fprintf(g.stdout, "service.%s has no complete backup in %s.\n", service, store)
			} else {
				tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tCREATED\tRELEASE\tSIZE\tVERIFIED\tREASON")
				for _, m := range l.Complete {
					var size int64
					for _, v := range m.Volumes {
						size += v.Size
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, m.Created.Local().Format(time.DateTime), m.Release, executor.HumanBytes(size), verified(m), m.Reason)
				}
				tw.Flush()
			}
			for _, id := range l.Incomplete {
				fmt.Fprintf(g.stdout, "incomplete (no manifest, never restored): %s\n", id)
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print the backups as JSON")
	verify := &cobra.Command{
		Use:   "verify [DIR] service.NAME ID",
		Short: "Download a backup and check it: checksums, archives, SQLite quick_check",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, id, err := backupArgs(args)
			if err != nil {
				return err
			}
			return g.withApplier(cmd, dirArgs, false, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
				rp, err := a.PrepareRestore(ctx, service, id)
				if err != nil {
					return err
				}
				r.close()
				r.final(fmt.Sprintf("backup %s is intact: %s match their checksums%s.", rp.Manifest.ID, plural(len(rp.Manifest.Volumes), "archive"), dbNote(rp.Manifest)))
				return nil
			})
		},
	}
	restore := &cobra.Command{
		Use:   "restore [DIR] service.NAME ID [-auto-approve]",
		Short: "Replace a service's volumes with a backup, after backing up the current data",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, id, err := backupArgs(args)
			if err != nil {
				return err
			}
			return g.withApplier(cmd, dirArgs, false, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
				rp, err := a.PrepareRestore(ctx, service, id)
				if err != nil {
					return err
				}
				m := rp.Manifest
				var vols []string
				for _, v := range m.Volumes {
					vols = append(vols, fmt.Sprintf("%s (%s)", v.Name, executor.HumanBytes(v.Bytes)))
				}
				r.final(fmt.Sprintf("\nRestore backup %s (release %d, %s) of service.%s from %s into volumes %s.\n%s",
					m.ID, m.Release, m.Created.Local().Format(time.DateTime), service, rp.Store, strings.Join(vols, ", "), rp.How))
				if !autoApprove {
					if err := g.confirm("restore this backup"); err != nil {
						return fmt.Errorf("restore cancelled; nothing was changed")
					}
				}
				safety, err := a.Restore(ctx, service, rp)
				if err != nil {
					return err
				}
				r.close()
				msg := fmt.Sprintf("service.%s: volumes restored from backup %s", service, m.ID)
				if safety != nil {
					msg += fmt.Sprintf("; the data before the restore is in backup %s", safety.ID)
				}
				r.final(msg + ".")
				return nil
			})
		},
	}
	restore.Flags().BoolVar(&autoApprove, "auto-approve", false, "restore without asking for confirmation")
	cmd.AddCommand(list, verify, restore)
	return cmd
}

// backupArgs splits [DIR] service.NAME ID.
func backupArgs(args []string) ([]string, string, string, error) {
	dirArgs, service, err := serviceArg(args[:len(args)-1])
	return dirArgs, service, args[len(args)-1], err
}

func verified(m *backup.Manifest) string {
	if len(m.SQLite) == 0 {
		return "checksums"
	}
	return "checksums, quick_check ok"
}

func dbNote(m *backup.Manifest) string {
	if len(m.SQLite) == 0 {
		return ""
	}
	return fmt.Sprintf(", and %s pass quick_check", plural(len(m.SQLite), "database"))
}
