package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

// A project is planned and applied through an executor.Fleet: one connection per engine, the
// project's own (docker { host }) as "default"; without engine blocks, the project's own
// engine alone as the implicit engine "" (plan.Implicit), a fleet of one.

// connectFleet connects to every engine of the project; close releases them. lock: the fleet
// is to take the deploy lock (apply, destroy, the migrations' dry-runs), for which
// -lock-timeout must be a duration.
func (g *globals) connectFleet(p *config.Project, events func(executor.Event), lock bool) (*executor.Fleet, func(), error) {
	wait, werr := g.lockWait()
	// The one place that tells engine blocks from none, so that no command's output changes:
	// with engine blocks a bad -lock-timeout has always been refused before any engine was
	// connected, even to plan; a single engine's commands read it only to take the lock, once
	// connected.
	if werr != nil && plan.MultiEngine(p) {
		return nil, nil, werr
	}
	f := &executor.Fleet{Base: *g.applierOf(p, wait, events), Engines: map[string]executor.Runtime{}, ProbeHosts: map[string]string{}, Remote: map[string]bool{}}
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
	if werr != nil && lock {
		closeAll()
		return nil, nil, werr
	}
	return f, closeAll, nil
}

// connectEngine connects to one engine of a project by name (plan.Implicit: the project's own,
// without engine blocks, whose errors name no engine). remote: an engine block's, which may be
// in another network although its address looks local (a socket forwarded from another host):
// its checks run from its proxy.
func connectEngine(p *config.Project, name string) (eng *docker.Engine, remote bool, err error) {
	host := p.Docker.Host
	var tls *docker.TLSFiles
	if e := p.Engines[name]; e != nil {
		host, remote = e.Host, true
		if e.TLS != nil {
			tls = &docker.TLSFiles{CA: e.TLS.CA, Cert: e.TLS.Cert, Key: e.TLS.Key}
		}
	}
	if eng, err = docker.NewWithTLS(host, tls); err != nil && name != plan.Implicit {
		err = fmt.Errorf("engine %s: %w", name, err)
	}
	if err != nil {
		return nil, false, err
	}
	return eng, remote, nil
}

// serviceEngine is the one engine a service runs on and the project as that engine holds it
// (without engine blocks, the implicit engine and the whole project); a service on several
// engines is an error naming what to do.
func serviceEngine(p *config.Project, service, what string) (string, *config.Project, error) {
	names := plan.ServiceEngines(p, service)
	if names == nil {
		return "", nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	if len(names) != 1 {
		return "", nil, fmt.Errorf("service.%s runs on %d engines (%s): %s", service, len(names), strings.Join(names, ", "), what)
	}
	return names[0], plan.ProjectOn(p, names[0]), nil
}

// engineSet is what a per-engine command works on: the engines of the configuration (every
// one, or the one -engine names), each with the project as it holds it. Without engine
// blocks, the implicit engine, named "".
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
	all := plan.EngineNames(p)
	switch implicit := all[0] == plan.Implicit; {
	case only == "":
	case implicit && only != config.DefaultEngine:
		return nil, fmt.Errorf("-engine %s: the configuration has no engine blocks", only)
	case implicit: // -engine default is the project's own engine: the implicit one
	case !slices.Contains(all, only):
		return nil, fmt.Errorf("-engine %s: no such engine; the configuration's are %s", only, strings.Join(all, ", "))
	default:
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
	f, closeAll, err := g.connectFleet(p, nil, false)
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
	f, closeAll, err := g.connectFleet(p, r.event, true)
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

// planEngines is plan: every engine read in parallel, an engine that cannot be read named
// (exit 1) with the plans of the others shown.
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
		// With engine blocks plan -migrations has ended with the dry-runs: neither warnings
		// nor -detailed-exitcode after them (a single engine's has both). Kept as it was.
		if err := g.planMigrations(ctx, p, fp, asJSON); err != nil || fp.Single() == nil {
			return err
		}
	} else {
		if asJSON {
			err = fp.WriteJSON(g.stdout)
		} else {
			err = fp.WriteText(g.stdout, plan.RenderOptions{Color: g.color(g.stdout)})
		}
		if err != nil {
			return err
		}
		// A plan is saved only when every engine was read (above): this line never comes
		// after the error below.
		if out != "" && !asJSON {
			fmt.Fprintf(g.stdout, "\nSaved the plan to %s. Apply exactly this plan with:\n    deployer apply %s\n", out, out)
		}
	}
	g.planWarnings(fleetWarnings(fp))
	if bad := fp.Unreachable(); len(bad) > 0 {
		g.fail(errors.New(strings.Join(bad, "; ")))
		return failed
	}
	if detailed && fp.HasChanges() {
		return exitError{code: 2}
	}
	return nil
}

// applyEngines is apply of a configuration: its plan shown, confirmed, applied. Until the
// apply starts, a failure ends with what is live (liveAfter); the apply says it itself.
func (g *globals) applyEngines(ctx context.Context, p *config.Project, targets []string, asJSON, autoApprove bool) error {
	fp, err := g.planFleet(ctx, p, targets, false)
	if err != nil {
		return g.liveAfter(ctx, p, asJSON, err)
	}
	if !asJSON {
		if err := fp.WriteText(g.stdout, plan.RenderOptions{Color: g.color(g.stdout)}); err != nil {
			return err
		}
	}
	g.planWarnings(fleetWarnings(fp))
	if bad := fp.Unreachable(); len(bad) > 0 {
		g.fail(fmt.Errorf("%s; nothing was changed (apply changes every engine or none)", strings.Join(bad, "; ")))
		return g.liveAfter(ctx, p, asJSON, failed)
	}
	if !fp.HasSteps() {
		return nil
	}
	if !autoApprove {
		if err := g.confirm("apply these changes"); err != nil {
			return g.liveAfter(ctx, p, asJSON, err)
		}
	}
	return g.applyFleet(ctx, p, fp, asJSON)
}

// rollbackFleet is rollback for a service on several engines: all of them or none.
func (g *globals) rollbackFleet(sn *session, service string, to int, asJSON bool) error {
	ctx, p := sn.ctx, sn.res.Project
	return g.onFleet(ctx, p, asJSON, func(f *executor.Fleet) (*executor.Outcome, error) { return f.Rollback(ctx, service, to) })
}

// fleetWarnings are the warnings of every engine's plan, each once (one plan's are distinct
// already: the implicit engine alone's are its plan's, in order).
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
