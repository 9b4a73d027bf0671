package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

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
	var (
		asJSON bool
		only   string
	)
	cmd := &cobra.Command{
		Use:   "status [DIR] [-json] [-engine NAME]",
		Short: "What runs: each service's live release, image, health, ports (on every engine)",
		Long: `Show what runs of the project in DIR (default: the current directory) on its engines: each
service's live release, its image, ports and health now, its previous releases, the proxy's
routes, the deploy lock, and anything an interrupted apply left. It changes nothing.`,
		Args: argsBetween(0, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := g.open(cmd, args)
			if err != nil {
				return err
			}
			defer sn.close()
			res := sn.res
			es, err := g.engines(res.Project, only)
			if err != nil {
				return err
			}
			defer es.close()
			type engineStatus struct {
				Engine string           `json:"engine"`
				Status *executor.Status `json:"status,omitempty"`
				Error  string           `json:"error,omitempty"`
			}
			var all []engineStatus
			bad := false
			for i, name := range es.names {
				eng := es.engines[name]
				st, err := executor.GetStatus(sn.ctx, es.projects[name], eng, docker.ProbeHost(eng.Host()), es.remote[name]) // pings first
				if name == "" {                                                                                              // one engine: as it always was
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(g, st)
					}
					printStatus(g, st, "")
					return nil
				}
				e := engineStatus{Engine: name, Status: st}
				if err != nil {
					e.Error, bad = err.Error(), true
				}
				all = append(all, e)
				if asJSON {
					continue
				}
				if i > 0 {
					fmt.Fprintln(g.stdout)
				}
				if err != nil {
					fmt.Fprintf(g.stderr, "Engine %s: cannot be read: %s\n", name, terminalSafe(err.Error()))
					continue
				}
				printStatus(g, st, name)
			}
			if asJSON {
				if err := writeJSON(g, map[string]any{"format_version": plan.FormatVersion, "engines": all}); err != nil {
					return err
				}
			}
			if bad {
				return failed
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as one JSON object")
	cmd.Flags().StringVar(&only, "engine", "", "only the engine `NAME` (of the engine blocks; default: every engine)")
	return exitCodes(cmd, exitReadOnly+" (an engine that cannot be read)")
}

// address is how output names a service: service.NAME, with [ENGINE] on engine blocks.
func address(service, engine string) string {
	if engine != "" {
		return "service." + service + "[" + engine + "]"
	}
	return "service." + service
}

// printStatus prints one engine's status.
func printStatus(g *globals, st *executor.Status, engine string) {
	if engine != "" {
		fmt.Fprintf(g.stdout, "Engine %s: ", engine)
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
		fmt.Fprintf(g.stdout, "\n%s", address(s.Service, engine))
		if !s.Configured {
			fmt.Fprint(g.stdout, " (not in the configuration: the next apply removes it)")
		}
		fmt.Fprintln(g.stdout)
		if s.LiveRelease == 0 {
			fmt.Fprintf(g.stdout, "  %s\n", s.State)
		} else {
			notServing := ""
			if s.Serving != "" {
				notServing = ", not serving"
			}
			fmt.Fprintf(g.stdout, "  live      release %d, %s (%s), %s%s\n", s.LiveRelease, s.Container, s.State, s.Image+" "+plan.ShortID(s.ImageID), notServing)
			if s.Serving != "" {
				fmt.Fprintf(g.stdout, "  serving   %s\n", s.Serving)
			}
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
	for _, c := range st.Conflicts {
		fmt.Fprintf(g.stdout, "\n! %s\n", c)
	}
	plan.WriteIgnored(g.stdout, st.Ignored)
}

func newReleases(g *globals) *cobra.Command {
	var (
		asJSON bool
		only   string
	)
	cmd := &cobra.Command{
		Use:   "releases [DIR] service.NAME [-json] [-engine NAME]",
		Short: "Release history kept on the host (on each engine of the service)",
		Long: `List the releases of service.NAME kept on its engines (the live one and the previous ones
that rollback can bring back): number, role, state, image, when and from which source it was
made, and what a migration that came with it did. It changes nothing.`,
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
			es, err := g.engines(res.Project, only)
			if err != nil {
				return err
			}
			defer es.close()
			type engineReleases struct {
				Engine   string                 `json:"engine"`
				Releases []executor.ReleaseInfo `json:"releases"`
				Error    string                 `json:"error,omitempty"`
			}
			var all []engineReleases
			bad := false
			for _, name := range es.names {
				if s := res.Project.Service(service); name != "" && (s == nil || !slices.Contains(s.EngineNames(), name)) {
					continue // the service does not run there
				}
				eng := es.engines[name]
				err := eng.Ping(sn.ctx)
				var list []executor.ReleaseInfo
				if err == nil {
					var obs *plan.Observed
					if obs, err = plan.Observe(sn.ctx, eng, res.Project); err == nil {
						list = executor.Releases(obs, service)
					}
				}
				if list == nil {
					list = []executor.ReleaseInfo{}
				}
				if name == "" {
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(g, map[string]any{"format_version": plan.FormatVersion, "service": service, "releases": list})
					}
				}
				e := engineReleases{Engine: name, Releases: list}
				if err != nil {
					e.Error, bad = err.Error(), true
				}
				all = append(all, e)
				if asJSON {
					continue
				}
				if name != "" {
					fmt.Fprintf(g.stdout, "%s%s:\n", map[bool]string{true: "\n", false: ""}[len(all) > 1], address(service, name))
				}
				if err != nil {
					fmt.Fprintf(g.stderr, "%s: cannot be read: %s\n", address(service, name), terminalSafe(err.Error()))
					continue
				}
				if err := printReleases(g, service, eng.Host(), list); err != nil {
					return err
				}
			}
			if asJSON {
				if err := writeJSON(g, map[string]any{"format_version": plan.FormatVersion, "service": service, "engines": all}); err != nil {
					return err
				}
			}
			if len(all) == 0 {
				return fmt.Errorf("service.%s does not run on the engines read", service)
			}
			if bad {
				return failed
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the releases as JSON")
	cmd.Flags().StringVar(&only, "engine", "", "only the engine `NAME` (of the engine blocks; default: every engine of the service)")
	return exitCodes(cmd, exitReadOnly)
}

// printReleases prints one engine's releases of a service.
func printReleases(g *globals, service, host string, list []executor.ReleaseInfo) error {
	if len(list) == 0 {
		fmt.Fprintf(g.stdout, "service.%s has no release on %s.\n", service, host)
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RELEASE\tROLE\tSTATUS\tIMAGE\tCREATED\tSOURCE")
	for _, r := range list {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s (%s)\t%s\t%s\n", r.Release, r.Role, r.State, r.Image, plan.ShortID(r.ImageID), r.Created.Local().Format(time.DateTime), r.Source)
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
}

func newRollback(g *globals) *cobra.Command {
	var (
		to     int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "rollback [DIR] service.NAME [-to RELEASE] [-json]",
		Short: "Health-gated switch back to an earlier release",
		Long: `Bring an earlier release of service.NAME back: the one before the live release, or RELEASE
(deployer releases lists them). It is started beside the live one, health-checked, and
switched to as a deploy is; if it fails its checks, the live release stays. On several
engines, all of them switch or none.`,
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
			if s := sn.res.Project.Service(service); s != nil && len(s.EngineNames()) > 1 {
				return g.rollbackFleet(sn, service, to, asJSON)
			}
			return g.withLoaded(sn, service, asJSON, func(ctx context.Context, res *hclspec.Result, a *executor.Applier, r *renderer) error {
				so, err := a.Rollback(ctx, service, to)
				out := &executor.Outcome{}
				if so != nil {
					out.Services = append(out.Services, so)
				} else if err != nil && ctx.Err() == nil {
					return err // refused before anything changed
				}
				r.close()
				return g.finish(ctx, r, out, err, func(ctx context.Context) string {
					return liveNow(ctx, a.Project, []namedEngine{{"", a.Runtime}})
				})
			})
		},
	}
	cmd.Flags().IntVar(&to, "to", 0, "the `RELEASE` to bring back (default: the one before live)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON event per line")
	return exitCodes(cmd, exitChanges)
}

func newUnlock(g *globals) *cobra.Command {
	var (
		force bool
		only  string
	)
	cmd := &cobra.Command{
		Use:   "unlock [DIR] -force [-engine NAME]",
		Short: "Break a stale deploy lock, showing who held it (on every engine)",
		Long: `Break the deploy lock of the project in DIR (default: the current directory), saying who held
it and since when. Only for a lock whose deploy is gone (a killed CI job): a deploy that still
runs would go on without it. -force is required.`,
		Args: argsBetween(0, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force {
				return fmt.Errorf("unlock breaks the lock of a deploy that may still run: pass -force if that deploy is gone")
			}
			sn, err := g.open(cmd, args)
			if err != nil {
				return err
			}
			defer sn.close()
			res := sn.res
			es, err := g.engines(res.Project, only)
			if err != nil {
				return err
			}
			defer es.close()
			bad := false
			for _, name := range es.names {
				where := ""
				if name != "" {
					where = " on engine " + name
				}
				eng := es.engines[name]
				err := eng.Ping(sn.ctx)
				var held *executor.Container
				if err == nil {
					held, err = executor.Unlock(sn.ctx, eng, res.Project.Name)
				}
				switch {
				case err != nil && name == "":
					return err
				case err != nil:
					fmt.Fprintf(g.stderr, "Engine %s: %s\n", name, terminalSafe(err.Error()))
					bad = true
				case held == nil:
					fmt.Fprintf(g.stdout, "The deploy lock of project %q was not held%s.\n", res.Project.Name, where)
				default:
					fmt.Fprintf(g.stdout, "Broke the deploy lock of project %q%s, held by %s.\n", res.Project.Name, where, executor.DescribeLock(held))
				}
			}
			if bad {
				return failed
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "really break the lock")
	cmd.Flags().StringVar(&only, "engine", "", "only the engine `NAME` (of the engine blocks; default: every engine)")
	return exitCodes(cmd, exitReadOnly)
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
