package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/deployer-dev/deployer/executor/plan"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/hclspec"
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
	for _, name := range plan.EngineNames(p) {
		eng, remote, err := connectEngine(p, name)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		opened = append(opened, eng)
		f.Engines[name], f.ProbeHosts[name], f.Remote[name] = eng, docker.ProbeHost(eng.Host()), remote
	}
	return f, closeAll, nil
}

// connectEngine connects to one engine of a project by name. remote: an engine block's, which
// may be in another network although its address looks local (a socket forwarded from another
// host): its checks run from its proxy.
func connectEngine(p *config.Project, name string) (eng *docker.Engine, remote bool, err error) {
	host := p.Docker.Host
	var tls *docker.TLSFiles
	if e := p.Engines[name]; e != nil {
		host, remote = e.Host, true
		if e.TLS != nil {
			tls = &docker.TLSFiles{CA: e.TLS.CA, Cert: e.TLS.Cert, Key: e.TLS.Key}
		}
	}
	if eng, err = docker.NewWithTLS(host, tls); err != nil {
		return nil, false, fmt.Errorf("engine %s: %w", name, err)
	}
	return eng, remote, nil
}

// serviceEngine is, in a configuration with engine blocks, the one engine a service runs on
// and the project as that engine holds it; a service on several engines is an error naming
// what to do.
func serviceEngine(p *config.Project, service, what string) (string, *config.Project, error) {
	s := p.Service(service)
	if s == nil {
		return "", nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	names := s.EngineNames()
	if len(names) != 1 {
		return "", nil, fmt.Errorf("service.%s runs on %d engines (%s): %s", service, len(names), strings.Join(names, ", "), what)
	}
	return names[0], plan.ProjectOn(p, names[0]), nil
}

// engineSet is what a per-engine command works on: the engines of the configuration (every
// one, or the one -engine names), each with the project as it holds it. Without engine
// blocks, the one engine, named "".
type engineSet struct {
	names    []string
	engines  map[string]*docker.Engine
	remote   map[string]bool
	projects map[string]*config.Project
}

func (es *engineSet) close() {
	for _, e := range es.engines {
		e.Close()
	}
}

// engines connects to the engines a per-engine command reads.
func (g *globals) engines(p *config.Project, only string) (*engineSet, error) {
	es := &engineSet{engines: map[string]*docker.Engine{}, remote: map[string]bool{}, projects: map[string]*config.Project{}}
	if !plan.MultiEngine(p) {
		if only != "" && only != config.DefaultEngine {
			return nil, fmt.Errorf("-engine %s: the configuration has no engine blocks", only)
		}
		eng, err := docker.New(p.Docker.Host)
		if err != nil {
			return nil, err
		}
		es.names, es.engines[""], es.projects[""] = []string{""}, eng, p
		return es, nil
	}
	all := plan.EngineNames(p)
	if only != "" {
		if !slices.Contains(all, only) {
			return nil, fmt.Errorf("-engine %s: no such engine; the configuration's are %s", only, strings.Join(all, ", "))
		}
		all = []string{only}
	}
	for _, name := range all {
		eng, remote, err := connectEngine(p, name)
		if err != nil {
			es.close()
			return nil, err
		}
		es.names = append(es.names, name)
		es.engines[name], es.remote[name], es.projects[name] = eng, remote, plan.ProjectOn(p, name)
	}
	return es, nil
}

// planFleet makes the plan of every engine.
func (g *globals) planFleet(ctx context.Context, p *config.Project, targets []string, makeKey bool) (*plan.FleetPlan, error) {
	names, err := targetNames(targets)
	if err != nil {
		return nil, err
	}
	f, closeAll, err := g.connectFleet(p, nil)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	return f.Plan(ctx, plan.PlanOptions{Targets: names, MakeKey: makeKey})
}

// applyFleet applies a fleet's plan, its events rendered as apply's.
func (g *globals) applyFleet(ctx context.Context, p *config.Project, fp *plan.FleetPlan, asJSON bool) error {
	return g.onFleet(ctx, p, asJSON, func(f *executor.Fleet) (*executor.Outcome, error) { return f.Apply(ctx, fp) })
}

// onFleet runs an operation on every engine, its events rendered as apply's, then says what
// each engine runs now.
func (g *globals) onFleet(ctx context.Context, p *config.Project, asJSON bool, op func(f *executor.Fleet) (*executor.Outcome, error)) error {
	r := newRenderer(g, asJSON)
	defer r.close()
	f, closeAll, err := g.connectFleet(p, r.event)
	if err != nil {
		return err
	}
	defer closeAll()
	out, err := op(f)
	r.close()
	return g.finish(ctx, r, out, err, func(ctx context.Context) string { return liveNow(ctx, p, fleetEngines(f)) })
}

// fleetEngines are a fleet's engines by name, in name order.
func fleetEngines(f *executor.Fleet) []namedEngine {
	var out []namedEngine
	for _, name := range plan.EngineNames(f.Base.Project) {
		if eng := f.Engines[name]; eng != nil {
			out = append(out, namedEngine{name, eng})
		}
	}
	return out
}

// planEngines is plan for a configuration with engine blocks: every engine read in parallel,
// an engine that cannot be read named (exit 1) with the plans of the others shown.
func (g *globals) planEngines(ctx context.Context, res *hclspec.Result, targets []string, out string, asJSON, detailed, dryRun bool) error {
	p := res.Project
	fp, err := g.planFleet(ctx, p, targets, out != "")
	if err != nil {
		return err
	}
	if out != "" {
		if bad := fp.Unreachable(); len(bad) > 0 {
			g.fail(fmt.Errorf("%s; no plan was saved", strings.Join(bad, "; ")))
			return failed
		}
		if err := plan.WritePlanFile(out, savedFleetPlan(fp, res, g.files)); err != nil {
			return err
		}
	}
	if dryRun {
		if bad := fp.Unreachable(); len(bad) > 0 {
			g.fail(errors.New(strings.Join(bad, "; ")))
			return failed
		}
		return g.planMigrationsFleet(ctx, p, fp, asJSON)
	}
	if asJSON {
		err = fp.WriteJSON(g.stdout)
	} else {
		err = fp.WriteText(g.stdout, plan.RenderOptions{Color: g.color(g.stdout)})
	}
	if err != nil {
		return err
	}
	g.planWarnings(fleetWarnings(fp))
	if bad := fp.Unreachable(); len(bad) > 0 {
		g.fail(errors.New(strings.Join(bad, "; ")))
		return failed
	}
	if out != "" && !asJSON {
		fmt.Fprintf(g.stdout, "\nSaved the plan to %s. Apply exactly this plan with:\n    deployer apply %s\n", out, out)
	}
	if detailed && fp.HasChanges() {
		return exitError{code: 2}
	}
	return nil
}

// applyEngines is apply for a configuration with engine blocks.
func (g *globals) applyEngines(ctx context.Context, p *config.Project, targets []string, asJSON, autoApprove bool) error {
	fp, err := g.planFleet(ctx, p, targets, false)
	if err != nil {
		return err
	}
	if !asJSON {
		if err := fp.WriteText(g.stdout, plan.RenderOptions{Color: g.color(g.stdout)}); err != nil {
			return err
		}
	}
	g.planWarnings(fleetWarnings(fp))
	if bad := fp.Unreachable(); len(bad) > 0 {
		g.fail(fmt.Errorf("%s; nothing was changed (apply changes every engine or none)", strings.Join(bad, "; ")))
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

// rollbackFleet is rollback for a service on several engines: all of them or none.
func (g *globals) rollbackFleet(sn *session, service string, to int, asJSON bool) error {
	ctx, p := sn.ctx, sn.res.Project
	return g.onFleet(ctx, p, asJSON, func(f *executor.Fleet) (*executor.Outcome, error) { return f.Rollback(ctx, service, to) })
}

// fleetWarnings are the warnings of every engine's plan, each once.
func fleetWarnings(fp *plan.FleetPlan) []string {
	var out []string
	for _, ep := range fp.Engines {
		if ep.Plan != nil {
			for _, w := range ep.Plan.Warnings {
				if !slices.Contains(out, w) {
					out = append(out, w)
				}
			}
		}
	}
	return out
}
