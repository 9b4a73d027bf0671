package executor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
)

// A Fleet is a project whose services run on several engines (engine blocks). Each engine is
// planned and applied as a project of its own, holding the services that run there; what
// the engines share is the deploy lock (taken on all of them, in name order, or on none), one
// release number per service, the image (built once, sent to the engines that lack it) and,
// for a service on several engines, its rollout (rollout.go): batches, all or nothing.
//
// A configuration without engine blocks is the fleet of one engine, the implicit one
// (plan.Implicit): its plan, apply and errors are a single engine's, as they always were (no
// lock taken ahead, no error named by an engine, no release agreed between engines).
type Fleet struct {
	// Base is the Applier of every engine: Project is the whole project; Runtime, ProbeHost
	// and Remote are set per engine from the fields below.
	Base Applier
	// Engines are the connected engines by name (config.DefaultEngine for the project's own,
	// plan.Implicit without engine blocks): at least every engine a service runs on.
	Engines map[string]Runtime
	// ProbeHosts and Remote are, by engine, the Applier fields of the same names.
	ProbeHosts map[string]string
	Remote     map[string]bool
}

// Plan reads every engine in parallel and plans each. An engine that cannot be read is in the
// plan with its error; the others are planned all the same.
func (f *Fleet) Plan(ctx context.Context, opts plan.PlanOptions) (*plan.FleetPlan, error) {
	p := f.Base.Project
	if f.implicit() {
		eng := f.Engines[plan.Implicit]
		pl, err := MakePlan(ctx, p, eng, plan.PlanOptions{Targets: opts.Targets, MakeKey: opts.MakeKey, ProbeHost: f.ProbeHosts[plan.Implicit]})
		if err != nil {
			return nil, err
		}
		return plan.Alone(pl), nil
	}
	for _, t := range opts.Targets {
		if p.Service(t) == nil {
			return nil, fmt.Errorf("-target service.%s: no service %q in the configuration", t, t)
		}
	}
	fp := &plan.FleetPlan{FormatVersion: plan.FormatVersion, Project: p.Name}
	for _, name := range plan.EngineNames(p) {
		fp.Engines = append(fp.Engines, &plan.EnginePlan{Engine: name})
	}
	// One release number on every engine: the one an engine already runs with this
	// configuration (after an interrupted rollout), else the highest any engine would give.
	release := map[string]int{}
	f.planEach(ctx, fp, opts, release)
	for pass := 0; pass < 2; pass++ {
		want := map[string]int{}
		for _, s := range f.Base.Project.Services {
			none, dep, agree := 0, 0, true
			for _, ep := range fp.Engines {
				ch := plan.ChangeOf(ep, s.Name)
				switch {
				case ch == nil:
				case ch.Action == plan.ActionNone && pass == 0:
					none = max(none, ch.LiveRelease)
				case plan.Deploys(ch):
					agree = agree && (dep == 0 || dep == ch.NextRelease)
					dep = max(dep, ch.NextRelease)
				}
			}
			switch {
			case dep == 0:
			case none > 0 && none != dep:
				want[s.Name] = none // taken where the engines keep nothing as high
			case !agree:
				want[s.Name] = dep
			}
		}
		if len(want) == 0 {
			break
		}
		for k, v := range want {
			release[k] = v
		}
		f.planEach(ctx, fp, opts, release)
	}
	f.describe(fp)
	return fp, nil
}

func (f *Fleet) planEach(ctx context.Context, fp *plan.FleetPlan, opts plan.PlanOptions, release map[string]int) {
	var wg sync.WaitGroup
	for _, ep := range fp.Engines {
		sub := plan.ProjectOn(f.Base.Project, ep.Engine)
		var targets []string
		for _, t := range opts.Targets {
			if sub.Service(t) != nil {
				targets = append(targets, t)
			}
		}
		if len(opts.Targets) > 0 && len(targets) == 0 {
			continue // nothing targeted runs here
		}
		eng := f.Engines[ep.Engine]
		if eng == nil {
			ep.Error = "not connected"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep.Host = eng.Host()
			pl, err := MakePlan(ctx, sub, eng, plan.PlanOptions{Targets: targets, Remote: f.Remote[ep.Engine], Release: release,
				MakeKey: opts.MakeKey, ProbeHost: f.ProbeHosts[ep.Engine]})
			ep.Plan, ep.Error = pl, ""
			if err != nil {
				ep.Plan, ep.Error = nil, err.Error()
			}
		}()
	}
	wg.Wait()
}

// describe adds the rollouts and the engines out of step, and says in each engine's steps where
// its image comes from.
func (f *Fleet) describe(fp *plan.FleetPlan) {
	p := f.Base.Project
	for _, ep := range fp.Engines {
		for _, ch := range plan.ChangesOf(ep) {
			if ch.Action == plan.ActionDelete && p.Service(ch.Service) != nil {
				ch.Reasons = []string{fmt.Sprintf("engine %s is no longer in its engines: removed here once the engines it runs on have switched", ep.Engine)}
			}
		}
	}
	for _, s := range p.Services {
		recorded := map[string]string{}
		for _, ep := range fp.Engines {
			if ch := plan.ChangeOf(ep, s.Name); ch != nil {
				for name, host := range ch.Engines {
					recorded[name] = host
				}
			}
		}
		for _, name := range plan.SortedKeys(recorded) {
			if _, declared := p.Engines[name]; !declared && name != config.DefaultEngine {
				fp.Undeclared = append(fp.Undeclared, fmt.Sprintf("service.%s was deployed to engine %s (%s), which the configuration no longer declares: if it still runs there, declare the engine again and apply removes it there, or remove its containers there by hand (label %s=%s)", s.Name, name, recorded[name], plan.LabelProject, p.Name))
			}
		}
		if len(s.EngineNames()) < 2 {
			continue
		}
		live := map[int][]string{}
		for _, e := range s.EngineNames() {
			if ch := plan.ChangeOf(fp.Engine(e), s.Name); ch != nil && ch.LiveRelease > 0 {
				live[ch.LiveRelease] = append(live[ch.LiveRelease], e)
			}
		}
		if len(live) > 1 {
			var parts []string
			for _, r := range plan.SortedInts(live) {
				parts = append(parts, fmt.Sprintf("%s: release %d", strings.Join(live[r], ", "), r))
			}
			fp.OutOfStep = append(fp.OutOfStep, fmt.Sprintf("service.%s runs different releases (%s), after a failed or interrupted rollout: apply brings every engine to the configuration", s.Name, strings.Join(parts, "; ")))
		}
		ro := f.rolloutOf(s, fp)
		if ro == nil {
			continue
		}
		rp := &plan.RolloutPlan{Service: s.Name, Batches: ro.batches(), ImageFrom: ro.imageFrom}
		if s.Rollout.Wait > 0 {
			rp.Wait = plan.Dur(s.Rollout.Wait)
		}
		for _, e := range ro.order {
			ep := fp.Engine(e)
			rp.Release = plan.ChangeOf(ep, s.Name).NextRelease
			if ro.imageFrom == "" || e == ro.imageFrom {
				continue
			}
			for _, st := range ep.Plan.Steps {
				if st.Service == s.Name && (st.Kind == plan.StepBuild || st.Kind == plan.StepImage) {
					st.Detail = fmt.Sprintf("use the image %s of engine %s, sent here if this engine lacks it", s.Image, ro.imageFrom)
				}
			}
		}
		fp.Rollouts = append(fp.Rollouts, rp)
	}
}

// rolloutOf is a service's rollout in this plan: the engines that deploy a new release, in
// the service's order; nil when fewer than two do.
func (f *Fleet) rolloutOf(s *config.Service, fp *plan.FleetPlan) *rollout {
	var order []string
	imageFrom, lacking := "", false
	for _, e := range s.EngineNames() {
		ch := plan.ChangeOf(fp.Engine(e), s.Name)
		if ch == nil || !plan.Deploys(ch) {
			continue
		}
		order = append(order, e)
		switch {
		case s.Build != nil && imageFrom == "":
			imageFrom = e // built on the first, sent to the others
		case s.Build == nil && ch.ImageID != "" && imageFrom == "":
			imageFrom = e // the engine that holds the image
		case s.Build == nil && ch.ImageID == "":
			lacking = true
		}
	}
	if len(order) < 2 {
		return nil
	}
	if s.Build == nil && !lacking {
		imageFrom = "" // every engine has it: each uses its own
	}
	return newRollout(s, order, imageFrom)
}

// implicit reports whether the fleet is the implicit engine alone (no engine blocks).
func (f *Fleet) implicit() bool { return !plan.MultiEngine(f.Base.Project) }

// applier is the Applier of one engine.
func (f *Fleet) applier(name string, rollouts map[string]*rollout) *Applier {
	a := f.Base
	a.Project = plan.ProjectOn(f.Base.Project, name)
	a.Runtime = f.Engines[name]
	a.ProbeHost = f.ProbeHosts[name]
	a.Remote = f.Remote[name]
	a.engine = name
	a.rollouts = rollouts
	a.peers = f.Engines
	return &a
}

// Apply carries out a fleet plan: the lock on every engine that changes (all or none), then
// every engine's plan at once, the services on several engines rolled out together.
func (f *Fleet) Apply(ctx context.Context, fp *plan.FleetPlan) (*Outcome, error) {
	out := &Outcome{}
	if bad := fp.Unreachable(); len(bad) > 0 {
		return out, fmt.Errorf("nothing was changed: %s; apply changes every engine or none", strings.Join(bad, "; "))
	}
	var names []string
	plans := map[string]*plan.Plan{}
	for _, ep := range fp.Engines {
		if ep.Plan != nil && len(ep.Plan.Steps) > 0 {
			names = append(names, ep.Engine)
			plans[ep.Engine] = ep.Plan
		}
	}
	if len(names) == 0 {
		return out, nil
	}
	rollouts := map[string]*rollout{}
	for _, s := range f.Base.Project.Services {
		if ro := f.rolloutOf(s, fp); ro != nil {
			rollouts[s.Name] = ro
		}
	}
	return f.onEngines(ctx, names, rollouts, func(a *Applier) ([]*ServiceOutcome, error) {
		o, err := a.Apply(ctx, plans[a.engine])
		return o.Services, err
	})
}

// Rollback brings an earlier release of a service on several engines back on all of them, or
// on none: the lock on every engine of the service, one target release (release to, or the
// newest previous one, which must be the same on every engine), then the rollback's sequence
// on each engine, its switches in the rollout's batches.
func (f *Fleet) Rollback(ctx context.Context, service string, to int) (*Outcome, error) {
	out := &Outcome{}
	s := f.Base.Project.Service(service)
	if s == nil {
		return out, fmt.Errorf("service.%s is not in the configuration", service)
	}
	names := s.EngineNames()
	// The target, decided before anything is locked or changed.
	targets := map[int][]string{}
	for _, name := range names {
		eng := f.Engines[name]
		if eng == nil {
			return out, fmt.Errorf("engine %s is not connected; nothing was changed", name)
		}
		if err := eng.Ping(ctx); err != nil {
			return out, fmt.Errorf("engine %s: %w; nothing was changed (a rollback changes every engine or none)", name, err)
		}
		obs, err := plan.Observe(ctx, eng, f.Base.Project)
		if err != nil {
			return out, fmt.Errorf("engine %s: %w", name, err)
		}
		st := obs.Services[service]
		if st == nil || st.Live == nil {
			return out, fmt.Errorf("service.%s has no live release on engine %s: deploy it with apply first; nothing was changed", service, name)
		}
		target, err := rollbackTarget(s, st, to)
		if err != nil {
			return out, fmt.Errorf("engine %s: %w; nothing was changed", name, err)
		}
		targets[target.Release()] = append(targets[target.Release()], name)
	}
	if len(targets) > 1 {
		var parts []string
		for _, r := range plan.SortedInts(targets) {
			parts = append(parts, fmt.Sprintf("%s: release %d", strings.Join(targets[r], ", "), r))
		}
		return out, fmt.Errorf("the engines' releases before the live one differ (%s): name the release with -to; nothing was changed", strings.Join(parts, "; "))
	}
	var target int
	for r := range targets {
		target = r
	}
	rollouts := map[string]*rollout{service: newRollout(s, names, "")}
	return f.onEngines(ctx, names, rollouts, func(a *Applier) ([]*ServiceOutcome, error) {
		so, err := a.Rollback(ctx, service, target)
		if so == nil {
			return nil, err
		}
		return []*ServiceOutcome{so}, err
	})
}

// onEngines runs op on the engines named at once, each with its Applier, once the deploy lock
// is taken on all of them (lockAll): each engine's end is told to the rollouts, and the
// outcomes come back named by engine, sorted by service, with every engine's error.
func (f *Fleet) onEngines(ctx context.Context, names []string, rollouts map[string]*rollout, op func(a *Applier) ([]*ServiceOutcome, error)) (*Outcome, error) {
	out := &Outcome{}
	if f.implicit() {
		// One engine: op takes its lock itself, and its outcome and error are its own.
		var err error
		out.Services, err = op(f.applier(plan.Implicit, rollouts))
		return out, err
	}
	appliers, unlock, err := f.lockAll(ctx, names, rollouts)
	if err != nil {
		return out, err
	}
	defer unlock()
	results := make([][]*ServiceOutcome, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = op(appliers[name])
			for _, ro := range rollouts {
				ro.engineDone(name, errs[i])
			}
		}()
	}
	wg.Wait()
	var msgs []string
	for i, name := range names {
		for _, so := range results[i] {
			so.Engine = name
			out.Services = append(out.Services, so)
		}
		if errs[i] != nil {
			msgs = append(msgs, fmt.Sprintf("engine %s: %v", name, errs[i]))
		}
	}
	sort.SliceStable(out.Services, func(i, j int) bool { return out.Services[i].Service < out.Services[j].Service })
	if len(msgs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	return out, nil
}

// lockAll makes the appliers of the engines named, their events sent one at a time, and takes
// the deploy lock on each, in name order: on all of them, or (an error) on none. unlock
// releases the locks, last taken first.
func (f *Fleet) lockAll(ctx context.Context, names []string, rollouts map[string]*rollout) (map[string]*Applier, func(), error) {
	events := f.Base.Events
	if events != nil {
		var mu sync.Mutex
		events = func(e Event) { mu.Lock(); defer mu.Unlock(); f.Base.Events(e) }
	}
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	var unlocks []func()
	unlock := func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
	appliers := map[string]*Applier{}
	for _, name := range sorted {
		a := f.applier(name, rollouts)
		a.Events = events
		release, err := a.newRun().begin(ctx, false)
		if err != nil {
			unlock()
			return nil, nil, fmt.Errorf("engine %s: %w; nothing was changed (the lock is taken on every engine or none)", name, err)
		}
		unlocks = append(unlocks, release)
		a.locked = true
		appliers[name] = a
	}
	return appliers, unlock, nil
}

// DryRunMigrations runs the migrations' dry-runs (plan -migrations) of every engine's plan: a
// service with a migration runs on one engine (it has a database), so each runs where its
// service does, under that engine's lock.
func (f *Fleet) DryRunMigrations(ctx context.Context, fp *plan.FleetPlan) ([]*DryRunResult, error) {
	var out []*DryRunResult
	for _, ep := range fp.Engines {
		if ep.Plan == nil {
			continue
		}
		a := f.applier(ep.Engine, nil)
		res, err := a.DryRunMigrations(ctx, ep.Plan)
		if err != nil && ep.Engine != plan.Implicit {
			err = fmt.Errorf("engine %s: %w", ep.Engine, err)
		}
		if err != nil {
			return out, err
		}
		for _, r := range res {
			r.Engine = ep.Engine
		}
		out = append(out, res...)
	}
	return out, nil
}
