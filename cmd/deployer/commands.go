package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/hclspec"
)

// connect loads the configuration and connects to its engine, which must answer.
func (g *globals) connect(cmd *cobra.Command, dirArgs []string) (*hclspec.Result, *docker.Engine, error) {
	res, err := g.load(dirArgs)
	if err != nil {
		return nil, nil, err
	}
	eng, err := g.engine(res.Project)
	if err != nil {
		return nil, nil, err
	}
	if err := eng.Ping(cmd.Context()); err != nil {
		eng.Close()
		return nil, nil, err
	}
	return res, eng, nil
}

// serviceArg splits [DIR] service.NAME.
func serviceArg(args []string) ([]string, string, error) {
	if len(args) == 0 {
		return nil, "", fmt.Errorf("name the service as service.NAME")
	}
	last := args[len(args)-1]
	name, ok := strings.CutPrefix(last, "service.")
	if !ok || name == "" {
		return nil, "", fmt.Errorf("%q: name the service as service.NAME", last)
	}
	return args[:len(args)-1], name, nil
}

func writeJSON(g *globals, v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func newStatus(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [DIR]",
		Short: "What runs: each service's live release, image, health, ports",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, eng, err := g.connect(cmd, args)
			if err != nil {
				return err
			}
			defer eng.Close()
			st, err := executor.GetStatus(cmd.Context(), res.Project, eng, docker.ProbeHost(eng.Host()))
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(g, st)
			}
			fmt.Fprintf(g.stdout, "Project %q on %s\n", st.Project, st.Engine)
			if st.Lock != "" {
				fmt.Fprintf(g.stdout, "Deploy lock: %s\n", st.Lock)
			}
			if p := st.Proxy; p != nil {
				fmt.Fprintf(g.stdout, "\nproxy %s (%s)%s\n", p.Container, p.State, map[bool]string{true: ": " + p.Error, false: ""}[p.Error != ""])
				for _, r := range p.Routes {
					extra := ""
					if r.FailedOver {
						extra = "  FAILED BACK to the previous release"
					}
					fmt.Fprintf(g.stdout, "  %-16s %s %-5s -> %-22s %d requests, %d errors, %d in flight%s\n", r.Name, r.Listen, r.Protocol, r.Backend, r.Requests, r.Errors, r.InFlight, extra)
				}
			}
			for _, s := range st.Services {
				fmt.Fprintf(g.stdout, "\nservice.%s", s.Service)
				if !s.Configured {
					fmt.Fprint(g.stdout, " (not in the configuration: the next apply removes it)")
				}
				fmt.Fprintln(g.stdout)
				if s.LiveRelease == 0 {
					fmt.Fprintf(g.stdout, "  %s\n", s.State)
				} else {
					fmt.Fprintf(g.stdout, "  live      release %d, %s (%s), %s\n", s.LiveRelease, s.Container, s.State, s.Image+" "+executor.ShortID(s.ImageID))
					if len(s.Ports) > 0 {
						fmt.Fprintf(g.stdout, "  ports     %s\n", strings.Join(s.Ports, ", "))
					}
					fmt.Fprintf(g.stdout, "  health    %s\n", s.Health)
				}
				if len(s.Previous) > 0 {
					var prev []string
					for _, n := range s.Previous {
						prev = append(prev, strconv.Itoa(n))
					}
					fmt.Fprintf(g.stdout, "  previous  %s (deployer rollback service.%s)\n", strings.Join(prev, ", "), s.Service)
				}
				for _, l := range s.Leftovers {
					fmt.Fprintf(g.stdout, "  ! %s\n", l.Detail)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as one JSON object")
	return cmd
}

func newReleases(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "releases [DIR] service.NAME",
		Short: "Release history kept on the host",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, err := serviceArg(args)
			if err != nil {
				return err
			}
			res, eng, err := g.connect(cmd, dirArgs)
			if err != nil {
				return err
			}
			defer eng.Close()
			obs, err := executor.Observe(cmd.Context(), eng, res.Project.Name)
			if err != nil {
				return err
			}
			list := executor.Releases(obs, service)
			if asJSON {
				if list == nil {
					list = []executor.ReleaseInfo{}
				}
				return writeJSON(g, map[string]any{"format_version": executor.FormatVersion, "service": service, "releases": list})
			}
			if len(list) == 0 {
				fmt.Fprintf(g.stdout, "service.%s has no release on %s.\n", service, eng.Host())
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RELEASE\tROLE\tSTATUS\tIMAGE\tCREATED\tSOURCE")
			for _, r := range list {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s (%s)\t%s\t%s\n", r.Release, r.Role, r.State, r.Image, executor.ShortID(r.ImageID), r.Created.Local().Format(time.DateTime), r.Source)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, r := range list {
				if m := r.Migration; m != nil {
					printMigration(g, r.Release, m)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the releases as JSON")
	return cmd
}

func newRollback(g *globals) *cobra.Command {
	var (
		to     int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "rollback [DIR] service.NAME [-to RELEASE]",
		Short: "Health-gated switch back to an earlier release",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirArgs, service, err := serviceArg(args)
			if err != nil {
				return err
			}
			var out *executor.Outcome
			var interrupted bool
			err = g.withApplier(cmd, dirArgs, asJSON, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
				so, err := a.Rollback(ctx, service, to)
				if err != nil {
					return err
				}
				out, interrupted = &executor.Outcome{Services: []*executor.ServiceOutcome{so}}, ctx.Err() != nil
				r.close()
				return g.summarize(r, out, interrupted)
			})
			return err
		},
	}
	cmd.Flags().IntVar(&to, "to", 0, "the `RELEASE` to bring back (default: the one before live)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON event per line")
	return cmd
}

func newUnlock(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "unlock [DIR] -force",
		Short: "Break a stale deploy lock, showing who held it",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force {
				return fmt.Errorf("unlock breaks the lock of a deploy that may still run: pass -force if that deploy is gone")
			}
			res, eng, err := g.connect(cmd, args)
			if err != nil {
				return err
			}
			defer eng.Close()
			held, err := executor.Unlock(cmd.Context(), eng, res.Project.Name)
			if err != nil {
				return err
			}
			if held == nil {
				fmt.Fprintf(g.stdout, "The deploy lock of project %q was not held.\n", res.Project.Name)
				return nil
			}
			fmt.Fprintf(g.stdout, "Broke the deploy lock of project %q, held by %s.\n", res.Project.Name, executor.DescribeLock(held))
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "really break the lock")
	return cmd
}

// printMigration shows what the migration that came with a release did: its diff, then what it
// printed on the live data (escaped: the label is read back from the engine).
func printMigration(g *globals, release int, m *backup.MigrationRecord) {
	fmt.Fprintf(g.stdout, "\nRelease %d migrated %s with `%s`:\n", release, terminalSafe(m.Database), terminalSafe(m.Command))
	for _, l := range m.Changes {
		fmt.Fprintf(g.stdout, "  %s\n", terminalSafe(l))
	}
	if out := strings.TrimSpace(m.LiveOutput); out != "" {
		fmt.Fprintf(g.stdout, "  its output on the live data:\n")
		for _, l := range strings.Split(out, "\n") {
			fmt.Fprintf(g.stdout, "    %s\n", terminalSafe(l))
		}
	}
}
