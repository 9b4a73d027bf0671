package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

func newPlan(g *globals) *cobra.Command {
	var (
		out      string
		asJSON   bool
		detailed bool
		targets  []string
		dryRun   bool
	)
	cmd := &cobra.Command{
		Use:   "plan [DIR] [-out FILE] [-json] [-detailed-exitcode] [-target service.NAME] [-migrations]",
		Short: "Show what apply would change, and the steps it would run",
		Long: `Read what runs on the engine and compare it with the configuration in DIR (default: the current
directory): each service to create (+), replace blue-green (+/-), start (~) or remove (-), with
the attributes that differ, anything an interrupted apply left, and the steps apply would run.
Plan changes nothing on the engine. Where the engine is on this machine it also checks that no
process outside Docker holds the host ports; a backup store it cannot reach is a warning.

-out FILE saves the plan for "deployer apply FILE", which applies exactly it or refuses when
the configuration or what runs changed (a saved plan makes the project's key on the engine
when it has none: its sensitive values are hashed under it).`,
		Args: argsBetween(0, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := g.open(cmd, args)
			if err != nil {
				return err
			}
			defer sn.close()
			ctx, res := sn.ctx, sn.res
			return g.planEngines(ctx, res, targets, out, asJSON, detailed, dryRun)
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "save the plan to `FILE`, for deployer apply FILE")
	f.BoolVar(&asJSON, "json", false, "print the plan as one JSON object")
	f.BoolVar(&detailed, "detailed-exitcode", false, "exit 0 for no changes, 1 for an error, 2 for changes")
	f.StringArrayVar(&targets, "target", nil, "plan only `service.NAME` (repeatable)")
	f.BoolVar(&dryRun, "migrations", false, "also run each migration's dry-run on a copy of the live database and print its schema diff (runs the new image on the engine: never for untrusted pull requests)")
	return exitCodes(cmd, "0 success (with -detailed-exitcode: no changes); 1 error; 2 changes present (with -detailed-exitcode); 130 interrupted (Ctrl-C)")
}

// planWarnings says on stderr what apply may stop at that plan could not settle.
func (g *globals) planWarnings(warnings []string) {
	for _, w := range warnings {
		g.problem("warning", w)
	}
}

// planMigrations prints the plan, then runs the migrations' dry-runs, each on its service's
// engine, and prints what each found. With -json: one object, the plan with its "migrations".
func (g *globals) planMigrations(ctx context.Context, p *config.Project, fp *plan.FleetPlan, asJSON bool) error {
	return g.dryRuns(asJSON, fp.Shown(), func() error {
		return fp.WriteText(g.stdout, plan.RenderOptions{Color: g.color(g.stdout)})
	}, func(events func(executor.Event)) ([]*executor.DryRunResult, error) {
		f, closeAll, err := g.connectFleet(p, events, true)
		if err != nil {
			return nil, err
		}
		defer closeAll()
		return f.DryRunMigrations(ctx, fp)
	})
}

// dryRuns prints the plan (text), runs the dry-runs and prints what each found; with -json,
// one object: the plan with its "migrations".
func (g *globals) dryRuns(asJSON bool, pl any, writePlan func() error, run func(events func(executor.Event)) ([]*executor.DryRunResult, error)) error {
	if !asJSON {
		if err := writePlan(); err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "\nMigration dry-runs (on a copy of the live data; nothing is deployed):\n")
	}
	r := newRenderer(g, false)
	events := r.event
	if asJSON {
		events = nil
	}
	results, err := run(events)
	r.close()
	if err != nil {
		return err
	}
	failed := false
	for _, res := range results {
		failed = failed || res.Error != ""
	}
	if asJSON {
		raw, _ := json.Marshal(pl)
		var obj map[string]any
		json.Unmarshal(raw, &obj)
		if results == nil {
			results = []*executor.DryRunResult{}
		}
		obj["migrations"] = results
		if err := writeJSON(g, obj); err != nil {
			return err
		}
	} else {
		if len(results) == 0 {
			fmt.Fprintf(g.stdout, "  no service of the plan has a migration to run.\n")
		}
		for _, res := range results {
			printDryRun(g, res)
		}
	}
	for _, res := range results {
		if res.Error != "" {
			g.fail(fmt.Errorf("the migration dry-run of %s failed: %s", address(res.Service, res.Engine), res.Error))
		}
	}
	if failed {
		return exitError{code: 1}
	}
	return nil
}

// printDryRun shows one service's dry-run: the diff, and whether apply would go ahead.
func printDryRun(g *globals, res *executor.DryRunResult) {
	fmt.Fprintf(g.stdout, "\n%s", address(res.Service, res.Engine))
	if m := res.Report; m != nil {
		fmt.Fprintf(g.stdout, ": `%s` on %s: %s\n", terminalSafe(m.Command), m.Database, m.Summary())
		if m.DryRun && res.Error == "" {
			for _, l := range m.Lines() {
				fmt.Fprintf(g.stdout, "  %s\n", terminalSafe(l))
			}
		}
	} else {
		fmt.Fprintln(g.stdout)
	}
	switch {
	case res.Error != "":
		fmt.Fprintf(g.stdout, "  the dry-run failed: %s\n", terminalSafe(res.Error))
	case res.Refused != "":
		fmt.Fprintf(g.stdout, "  %s\n", res.Refused)
	default:
		fmt.Fprintf(g.stdout, "  apply would run it on the live data after the backup, the live release serving.\n")
	}
}

func targetNames(targets []string) ([]string, error) {
	var out []string
	for _, t := range targets {
		name, ok := strings.CutPrefix(t, "service.")
		if !ok || name == "" {
			return nil, fmt.Errorf("-target %q: name a service as service.NAME", t)
		}
		out = append(out, name)
	}
	return out, nil
}

// savedFleetPlan is a fleet's plan to save; its sensitive values are hashed with the key of
// its first engine.
func savedFleetPlan(fp *plan.FleetPlan, res *hclspec.Result, files []string) *plan.SavedPlan {
	hash := func(string) string { return "" }
	if kp := fp.KeyPlan(); kp != nil {
		hash = kp.Plan.HashSensitive
	}
	sp := savedOf(res, files, hash)
	sp.Hold(fp)
	return sp
}

func savedOf(res *hclspec.Result, files []string, hash func(string) string) *plan.SavedPlan {
	dir, _ := filepath.Abs(res.Project.Dir)
	sp := &plan.SavedPlan{Dir: dir}
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		sp.Files = append(sp.Files, abs)
	}
	for _, v := range res.Variables {
		sv := plan.SavedVariable{Name: v.Name, Sensitive: v.Sensitive, Source: v.Source}
		if v.Sensitive {
			sv.Hash = hash(v.Value)
		} else {
			sv.Value = v.Value
		}
		sp.Variables = append(sp.Variables, sv)
	}
	return sp
}
