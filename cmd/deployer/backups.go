package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

// withApplier loads the configuration and runs fn with an applier on its engine: with engine
// blocks, the one engine the service runs on.
func (g *globals) withApplier(cmd *cobra.Command, dirArgs []string, service string, asJSON bool, fn func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error) error {
	sn, err := g.open(cmd, dirArgs)
	if err != nil {
		return err
	}
	defer sn.close()
	return g.withLoaded(sn, service, asJSON, fn)
}

// withLoaded is withApplier in a session.
func (g *globals) withLoaded(sn *session, service string, asJSON bool, fn func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error) error {
	ctx, res := sn.ctx, sn.res
	name, p, err := serviceEngine(res.Project, service, "backups are of a service on one engine")
	if err != nil {
		return err
	}
	eng, remote, err := connectEngine(res.Project, name)
	if err != nil {
		return err
	}
	defer eng.Close()
	r := newRenderer(g, asJSON)
	defer r.close()
	a, err := g.applier(p, eng, r.event)
	if err != nil {
		return err
	}
	a.Remote = remote
	if err := fn(ctx, res, a, r); err != nil {
		var code exitError
		if errors.As(err, &code) {
			return err // said already
		}
		r.close()
		r.fail(err)
		return failed
	}
	return nil
}

func newBackup(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backup [DIR] service.NAME [-json]",
		Short: "Back up a service's volumes now",
		Long: `Back up the volumes that the backup block of service.NAME names, now, from its live release,
to its backup store, as apply does before a cutover (the live release is paused only as the
block's consistency says).`,
		Args: argsBetween(1, 2, "the service, as service.NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, err := serviceArg(args)
			if err != nil {
				return err
			}
			return g.withApplier(cmd, dirArgs, service, asJSON, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
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
	return exitCodes(cmd, exitPlain)
}

func newBackups(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "backups", Short: "List, verify and restore the backups of a service", Args: cobra.ArbitraryArgs, RunE: groupRun,
		Long: "List, verify and restore the backups of a service, in the backup store its backup block names."}
	cmd.AddCommand(newBackupsList(g), newBackupsVerify(g), newBackupsRestore(g))
	return cmd
}

// newBackupsList is `deployer backups list`.
func newBackupsList(g *globals) *cobra.Command {
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [DIR] service.NAME [-json]",
		Short: "The backups of a service: time, release, size, verified",
		Long: `List the backups of service.NAME in its backup store: complete ones (with their time,
release, size and what was verified), incomplete ones, and those refused (never restored).`,
		Args: argsBetween(1, 2, "the service, as service.NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, err := serviceArg(args)
			if err != nil {
				return err
			}
			sn, err := g.open(cmd, dirArgs)
			if err != nil {
				return err
			}
			defer sn.close()
			res := sn.res
			s := res.Project.Service(service)
			if s == nil || s.Backup == nil {
				return fmt.Errorf("service.%s has no backup block in the configuration", service)
			}
			sb, err := executor.OpenBackups(sn.ctx, res.Project, s, "")
			if err != nil {
				return err
			}
			l, err := sb.List(sn.ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if l.Complete == nil {
					l.Complete = []*backup.Manifest{}
				}
				type listed struct {
					*backup.Manifest
					Signed backup.Signed `json:"signed,omitempty"`
				}
				out := []listed{}
				for _, m := range l.Complete {
					out = append(out, listed{m, m.Signed})
				}
				return writeJSON(g, map[string]any{"format_version": plan.FormatVersion, "service": service, "store": sb.Store.String(),
					"backups": out, "incomplete": l.Incomplete, "refused": l.Refused, "warnings": l.Warnings})
			}
			if len(l.Complete) == 0 {
				fmt.Fprintf(g.stdout, "service.%s has no complete backup in %s.\n", service, sb.Store)
			} else {
				tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tCREATED\tRELEASE\tSIZE\tVERIFIED\tREASON")
				for _, m := range l.Complete {
					var size int64
					for _, v := range m.Volumes {
						size += v.Size
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, m.Created.Local().Format(time.DateTime), m.Release, executor.HumanBytes(size), verified(m), backup.Printable(m.Reason))
				}
				tw.Flush()
			}
			for _, id := range l.Incomplete {
				fmt.Fprintf(g.stdout, "incomplete (no manifest, never restored): %s\n", id)
			}
			for _, r := range l.Refused {
				fmt.Fprintf(g.stdout, "refused (never restored): %s: %s\n", r.ID, backup.Printable(r.Reason))
			}
			for _, w := range l.Warnings {
				fmt.Fprintf(g.stderr, "warning: %s\n", backup.Printable(w))
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print the backups as JSON")
	return exitCodes(list, exitReadOnly)
}

// newBackupsVerify is `deployer backups verify`.
func newBackupsVerify(g *globals) *cobra.Command {
	var identity string
	var allowUnsigned bool
	verify := &cobra.Command{
		Use:   "verify [DIR] service.NAME ID [-identity FILE]",
		Short: "Download a backup and check it: signature, checksums, archives, SQLite quick_check",
		Long: `Download backup ID of service.NAME (deployer backups list shows the IDs) and check it: its
signature, the checksums of its archives, that they unpack, and quick_check of its SQLite
databases. Nothing on the engine changes. When the store has a signing_key, a backup that is
not signed for it fails the check (exit 1), intact or not, unless -allow-unsigned.`,
		Args: argsBetween(2, 3, "the service (service.NAME) and the backup's ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, id, err := backupArgs(args)
			if err != nil {
				return err
			}
			return g.withApplier(cmd, dirArgs, service, false, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
				a.IdentityFile = identityFile(identity)
				m, err := a.VerifyBackup(ctx, service, id)
				if err != nil {
					return err
				}
				intact := fmt.Sprintf("backup %s is intact: %s match their checksums%s%s", m.ID, plural(len(m.Volumes), "archive"), dbNote(m), signedNote(m))
				if (m.Signed == backup.Unsigned || m.Signed == backup.OtherStore) && !allowUnsigned {
					// A gate that passes what the store's key does not vouch for is no gate.
					return fmt.Errorf("%s, and the store has a signing_key: it is not a genuine backup of this store (made before the key was set, by someone without it, or for another store); pass -allow-unsigned to accept it", intact)
				}
				r.close()
				r.final(intact + ".")
				return nil
			})
		},
	}
	verify.Flags().StringVar(&identity, "identity", "", "the age identity `FILE` that decrypts encrypted backups (default: DEPLOYER_AGE_IDENTITY)")
	verify.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "exit 0 for an intact backup that is not signed although the store has a signing_key")
	return exitCodes(verify, exitPlain)
}

// newBackupsRestore is `deployer backups restore`.
func newBackupsRestore(g *globals) *cobra.Command {
	var restoreJSON, autoApprove, allowUnsigned bool
	var identity string
	var mapping []string
	restore := &cobra.Command{
		Use:   "restore [DIR] service.NAME ID [-auto-approve] [-map OLD=NEW] [-identity FILE] [-allow-unsigned]",
		Short: "Replace a service's volumes with a backup, after backing up the current data",
		Long: `Replace the volumes of service.NAME with backup ID: the backup is verified first, the current
data backed up, the live release stopped, the volumes filled, and the release started and
health-checked again. It asks for 'yes' on the terminal unless -auto-approve.`,
		Args: argsBetween(2, 3, "the service (service.NAME) and the backup's ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, id, err := backupArgs(args)
			if err != nil {
				return err
			}
			opts := executor.RestoreOptions{AllowUnsigned: allowUnsigned, Map: map[string]string{}}
			for _, m := range mapping {
				from, to, ok := strings.Cut(m, "=")
				if !ok || from == "" || to == "" {
					return fmt.Errorf("-map %q: write it as -map BACKUP_VOLUME=CONFIGURED_VOLUME", m)
				}
				opts.Map[from] = to
			}
			return g.withApplier(cmd, dirArgs, service, restoreJSON, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
				a.IdentityFile = identityFile(identity)
				rp, err := a.PrepareRestore(ctx, service, id, opts)
				if err != nil {
					return err
				}
				defer rp.Close() // the archives the verify downloaded
				m := rp.Manifest
				var vols []string
				for _, v := range rp.Volumes {
					into := ""
					if v.From != v.To {
						into = " into " + v.To
					}
					vols = append(vols, fmt.Sprintf("%s%s (%s)", v.From, into, executor.HumanBytes(v.Bytes)))
				}
				for _, w := range rp.Warnings {
					r.warn(w)
				}
				r.final(fmt.Sprintf("\nRestore backup %s (release %d, %s%s) of service.%s from %s: volumes %s.\n%s",
					m.ID, m.Release, m.Created.Local().Format(time.DateTime), signedNote(m), service, rp.Store, strings.Join(vols, ", "), rp.How))
				if !autoApprove {
					if err := g.confirm("restore this backup"); err != nil {
						return fmt.Errorf("restore cancelled; nothing was changed")
					}
				}
				out, err := a.Restore(ctx, service, rp)
				if err != nil {
					return err
				}
				r.close()
				msg := fmt.Sprintf("service.%s: volumes restored from backup %s", service, m.ID)
				if out.Safety != nil {
					msg += fmt.Sprintf("; the data before the restore is in backup %s", out.Safety.ID)
				}
				if !out.Started {
					msg += "; no release is live: the next `deployer apply` starts the service on the restored data"
				}
				r.final(msg + ".")
				return nil
			})
		},
	}
	restore.Flags().BoolVar(&autoApprove, "auto-approve", false, "restore without asking for confirmation")
	restore.Flags().BoolVar(&restoreJSON, "json", false, "print one JSON event per line")
	restore.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "restore a backup that has no signature although the store has a signing_key")
	restore.Flags().StringArrayVar(&mapping, "map", nil, "restore the backup's volume OLD into the configured volume NEW: `OLD=NEW` (repeatable)")
	restore.Flags().StringVar(&identity, "identity", "", "the age identity `FILE` that decrypts encrypted backups (default: DEPLOYER_AGE_IDENTITY)")
	return exitCodes(restore, exitPlain)
}

// identityFile is the age identity from -identity, else DEPLOYER_AGE_IDENTITY.
func identityFile(flag string) string {
	if flag != "" {
		return flag
	}
	return os.Getenv("DEPLOYER_AGE_IDENTITY")
}

func signedNote(m *backup.Manifest) string {
	switch m.Signed {
	case backup.SignedOK:
		return ", signed"
	case backup.Unsigned:
		return ", NOT signed"
	case backup.OtherStore:
		return ", signed for ANOTHER STORE (" + m.Store + ")"
	}
	return ""
}

// backupArgs splits [DIR] service.NAME ID.
func backupArgs(args []string) ([]string, string, string, error) {
	dirArgs, service, err := serviceArg(args[:len(args)-1])
	return dirArgs, service, args[len(args)-1], err
}

func verified(m *backup.Manifest) string {
	v := "checksums"
	if len(m.SQLite) > 0 {
		v += ", quick_check ok"
	}
	if m.Encryption != "" {
		v += ", encrypted"
	}
	switch m.Signed {
	case backup.SignedOK:
		v += ", signed"
	case backup.Unsigned:
		v += ", UNSIGNED"
	case backup.OtherStore:
		v += ", SIGNED FOR ANOTHER STORE"
	}
	return v
}

func dbNote(m *backup.Manifest) string {
	if len(m.SQLite) == 0 {
		return ""
	}
	return fmt.Sprintf(", and %s pass quick_check", plural(len(m.SQLite), "database"))
}
