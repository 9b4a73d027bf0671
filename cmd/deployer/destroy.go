package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
)

func newDestroy(g *globals) *cobra.Command {
	var (
		autoApprove, asJSON, deleteVolumes bool
	)
	cmd := &cobra.Command{
		Use:   "destroy [DIR] [-auto-approve] [-delete-volumes] [-json]",
		Short: "Take the project down: remove everything the deployer made for it, keeping its data",
		Long: `Remove everything the deployer made for the project in DIR (default: the current directory) on
its engines (every engine, with engine blocks): its releases in every role (live, candidates,
previous), the proxy and its routes, the project's network, the deploy lock, the project's key,
the proxy's state and the scratch volumes, and the images it built or pulled for the releases.
The data volumes the releases mount, and the backups, are kept; -delete-volumes deletes the
data volumes too, after backing each up (the backups are named). A volume that a container of
anything else mounts is never deleted.

Destroy first shows what it will remove and keep, then asks for 'yes' on the terminal; without
a terminal (CI) it refuses unless -auto-approve. It takes the deploy lock, as apply does.`,
		Args: argsBetween(0, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := g.open(cmd, args)
			if err != nil {
				return err
			}
			defer sn.close()
			return g.destroy(sn.ctx, sn.res.Project, plan.DestroyOptions{DeleteVolumes: deleteVolumes}, autoApprove, asJSON)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&autoApprove, "auto-approve", false, "destroy without asking for confirmation")
	f.BoolVar(&deleteVolumes, "delete-volumes", false, "delete the data volumes too, each after a backup")
	f.BoolVar(&asJSON, "json", false, "print what destroy will do as one JSON object, then one JSON event per line")
	return exitCodes(cmd, exitChanges)
}

// destroy shows what goes from every engine, asks, and removes it.
func (g *globals) destroy(ctx context.Context, p *config.Project, opts plan.DestroyOptions, autoApprove, asJSON bool) error {
	r := newRenderer(g, asJSON)
	defer r.close()
	f, closeAll, err := g.connectFleet(p, r.event, true)
	if err != nil {
		return err
	}
	defer closeAll()
	plans, err := f.DestroyPlans(ctx, opts)
	if err != nil {
		return err
	}
	empty := true
	for _, dp := range plans {
		empty = empty && dp.Empty()
	}
	if asJSON {
		list := []*plan.DestroyPlan{}
		for _, name := range sortedNames(plans) {
			list = append(list, plans[name])
		}
		b, _ := json.Marshal(map[string]any{"format_version": plan.FormatVersion, "type": "destroy_plan", "engines": list})
		fmt.Fprintf(g.stdout, "%s\n", b)
	} else {
		for i, name := range sortedNames(plans) {
			if i > 0 {
				fmt.Fprintln(g.stdout)
			}
			if name != "" {
				fmt.Fprintf(g.stdout, "Engine %s: ", name)
			}
			var text bytes.Buffer
			if err := plans[name].WriteText(&text); err != nil {
				return err
			}
			fmt.Fprint(g.stdout, terminalSafe(text.String())) // names come from the engine
		}
	}
	if empty {
		return nil
	}
	if !autoApprove {
		if err := g.confirm(fmt.Sprintf("destroy project %q", p.Name)); err != nil {
			return err
		}
	}
	outs, err := f.Destroy(ctx, plans)
	r.close()
	for _, name := range sortedNames(outs) {
		out := outs[name]
		if out == nil {
			continue
		}
		where := ""
		if name != "" {
			where = " on engine " + name
		}
		for _, b := range out.Backups {
			r.final(fmt.Sprintf("Backed up%s: %s.", where, b))
		}
		for _, k := range out.Kept {
			r.warn(fmt.Sprintf("kept%s: %s", where, k))
		}
		if err == nil {
			r.final(fmt.Sprintf("Project %q destroyed%s: %s removed.", p.Name, where, plural(out.Removed, "object")))
		}
	}
	if err != nil {
		r.fail(err)
		r.live(liveNow(ctx, p, fleetEngines(f)))
		return failed
	}
	var kept []string
	for _, name := range sortedNames(plans) {
		for _, k := range plans[name].Kept {
			kept = append(kept, k.Name)
		}
	}
	if len(kept) > 0 {
		r.final("Kept: " + strings.Join(kept, ", ") + ", and the backups.")
	}
	return nil
}

func sortedNames[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
