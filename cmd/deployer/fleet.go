package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
)

// A project with engine blocks is planned and applied through an executor.Fleet: one
// connection per engine, the project's own (docker { host }) as "default".

// connectFleet connects to every engine of the project; close releases them.
func (g *globals) connectFleet(p *config.Project, events func(executor.Event)) (*executor.Fleet, func(), error) {
	base, err := g.applier(p, nil, events)
	if err != nil {
		return nil, nil, err
	}
	f := &executor.Fleet{Base: *base, Engines: map[string]executor.Runtime{}, ProbeHosts: map[string]string{}, Remote: map[string]bool{}}
	var opened []*docker.Engine
	closeAll := func() {
		for _, e := range opened {
			e.Close()
		}
	}
	for _, name := range executor.EngineNames(p) {
		host, remote := p.Docker.Host, false
		var tls *docker.TLSFiles
		if e := p.Engines[name]; e != nil {
			// An engine block's engine may be in another network although its address looks
			// local (a socket forwarded from another host): its checks run from its proxy.
			host, remote = e.Host, true
			if e.TLS != nil {
				tls = &docker.TLSFiles{CA: e.TLS.CA, Cert: e.TLS.Cert, Key: e.TLS.Key}
			}
		}
		eng, err := docker.NewWithTLS(host, tls)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("engine %s: %w", name, err)
		}
		opened = append(opened, eng)
		f.Engines[name], f.ProbeHosts[name], f.Remote[name] = eng, docker.ProbeHost(eng.Host()), remote
	}
	return f, closeAll, nil
}

// planFleet makes the plan of every engine.
func (g *globals) planFleet(ctx context.Context, p *config.Project, targets []string) (*executor.FleetPlan, error) {
	names, err := targetNames(targets)
	if err != nil {
		return nil, err
	}
	f, closeAll, err := g.connectFleet(p, nil)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	return f.Plan(ctx, executor.PlanOptions{Targets: names})
}

// applyFleet applies a fleet's plan, its events rendered as apply's.
func (g *globals) applyFleet(ctx context.Context, p *config.Project, fp *executor.FleetPlan, asJSON bool) error {
	r := newRenderer(g.stdout, asJSON, g.color(g.stdout))
	r.red = g.red
	defer r.close()
	f, closeAll, err := g.connectFleet(p, r.event)
	if err != nil {
		return err
	}
	defer closeAll()
	out, err := f.Apply(ctx, fp)
	r.close()
	if err != nil {
		if len(out.Services) > 0 {
			g.summarize(r, out, ctx.Err() != nil)
		}
		r.final(fmt.Sprintf("Error: %s", err))
		return failed
	}
	return g.summarize(r, out, ctx.Err() != nil)
}

// fleetUnsupported refuses what is not yet built for several engines, saying what to do.
func fleetUnsupported(what string) error {
	return fmt.Errorf("%s is not available for a configuration with engine blocks yet; %s", what, map[string]string{
		"a saved plan":     "run `deployer apply DIR`, which plans again under the lock",
		"plan -migrations": "a service with a migration runs on one engine: plan it with a configuration of that engine alone",
	}[what])
}

// planEngines is plan for a configuration with engine blocks: every engine read in parallel,
// an engine that cannot be read named (exit 1) with the plans of the others shown.
func (g *globals) planEngines(ctx context.Context, p *config.Project, targets []string, out string, asJSON, detailed, dryRun bool) error {
	switch {
	case out != "":
		return fleetUnsupported("a saved plan")
	case dryRun:
		return fleetUnsupported("plan -migrations")
	}
	fp, err := g.planFleet(ctx, p, targets)
	if err != nil {
		return err
	}
	if asJSON {
		err = fp.WriteJSON(g.stdout)
	} else {
		err = fp.WriteText(g.stdout, executor.RenderOptions{Color: g.color(g.stdout)})
	}
	if err != nil {
		return err
	}
	if bad := fp.Unreachable(); len(bad) > 0 {
		fmt.Fprintf(g.stderr, "Error: %s\n", strings.Join(bad, "; "))
		return failed
	}
	if detailed && fp.HasChanges() {
		return exitError{2}
	}
	return nil
}

// applyEngines is apply for a configuration with engine blocks.
func (g *globals) applyEngines(ctx context.Context, p *config.Project, targets []string, asJSON, autoApprove bool) error {
	fp, err := g.planFleet(ctx, p, targets)
	if err != nil {
		return err
	}
	if !asJSON {
		if err := fp.WriteText(g.stdout, executor.RenderOptions{Color: g.color(g.stdout)}); err != nil {
			return err
		}
	}
	if bad := fp.Unreachable(); len(bad) > 0 {
		fmt.Fprintf(g.stderr, "Error: %s; nothing was changed (apply changes every engine or none)\n", strings.Join(bad, "; "))
		return failed
	}
	if !fp.HasChanges() {
		return nil
	}
	if !autoApprove {
		if err := g.confirm("apply these changes"); err != nil {
			return err
		}
	}
	return g.applyFleet(ctx, p, fp, asJSON)
}
