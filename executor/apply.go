package executor

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/notify"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// Apply carries out the plan: it runs the plan's steps, in their order, by their names. It
// returns an error for failures outside one service (the lock, the engine); failures of
// services are in the Outcome, after the live release was kept or restored.
func (a *Applier) Apply(ctx context.Context, pl *plan.Plan) (*Outcome, error) {
	out := &Outcome{}
	if len(pl.Steps) == 0 {
		return out, nil
	}
	rn := a.newRun()
	rn.planned = pl.Steps
	unlock, err := rn.begin(ctx, true)
	if err != nil {
		return out, err
	}
	defer unlock()
	// What holds the ports may have changed since the plan was made (a saved plan).
	var changing []string
	for _, ch := range pl.Changes {
		if ch.Action != plan.ActionNone && ch.Action != plan.ActionDelete {
			changing = append(changing, ch.Service)
		}
	}
	if err := plan.CheckPorts(ctx, a.Runtime, a.Project, changing); err != nil {
		return out, err
	}
	// So may what bears the names it uses; the services' volumes are made with its labels.
	var services []*config.Service
	for _, name := range changing {
		if s := a.Project.Service(name); s != nil {
			services = append(services, s)
		}
	}
	if err := rn.own.checkOwnership(ctx, services); err != nil {
		return out, err
	}
	if err := rn.own.makeVolumes(ctx, services); err != nil {
		return out, err
	}
	obs, err := plan.Observe(ctx, a.Runtime, a.Project)
	if err != nil {
		return out, err
	}
	ap := &applyRun{run: rn, plan: pl, obs: obs, out: out}
	for _, group := range byService(pl.Steps) {
		if group[0].Service == "" {
			if err := ap.project(ctx, group); err != nil {
				return out, err
			}
		} else {
			ap.service(ctx, group)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return out, nil
}

// byService cuts a plan's steps into runs of one service's steps, and of the project's.
func byService(list []*plan.Step) [][]*plan.Step {
	var out [][]*plan.Step
	for i, st := range list {
		if i == 0 || st.Service != list[i-1].Service {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], st)
	}
	return out
}

// applyRun is one apply of a plan.
type applyRun struct {
	*run
	plan *plan.Plan
	obs  *plan.Observed
	out  *Outcome
}

// project runs the project's steps: the lock and unlock are the run's (begin); the preflight
// checks stop the apply before anything starts; the proxy is made ready for the services that
// need it, which fail with its error if it cannot be.
func (ap *applyRun) project(ctx context.Context, steps []*plan.Step) error {
	for _, st := range steps {
		switch st.Kind {
		case plan.StepPreflight:
			if err := ap.preflight(ctx, ap.plan, st); err != nil {
				return err
			}
		case plan.StepProxy:
			ap.proxy.ensure(ctx)
		}
	}
	return nil
}

// service runs one service's steps: first what an interrupted apply left of it, then its change.
func (ap *applyRun) service(ctx context.Context, steps []*plan.Step) {
	name := steps[0].Service
	s, ch := ap.Project.Service(name), ap.plan.Change(name)
	st := ap.obs.Services[name]
	if st == nil {
		st = &plan.ServiceState{Name: name}
	}
	for len(steps) > 0 && steps[0].Leftover() {
		ap.leftover(ctx, s, ch, st, steps[0])
		steps = steps[1:]
	}
	if ch == nil || ch.Action == plan.ActionNone || len(steps) == 0 {
		return
	}
	so := &ServiceOutcome{Service: name, Action: ch.Action}
	ap.out.Services = append(ap.out.Services, so)
	start := time.Now()
	err := ap.change(ctx, s, ch, st, so, steps)
	ap.result(so, err, start)
}

// leftover runs a step about something an interrupted apply left: a candidate goes, a release
// set aside becomes a previous one. Its failure is the step's: the change goes on.
func (ap *applyRun) leftover(ctx context.Context, s *config.Service, ch *plan.Change, st *plan.ServiceState, step *plan.Step) {
	switch {
	case step.Kind == plan.StepPutBack && step.Volume != "":
		ap.step(s.Name, step.Kind, step.Arg, step.Detail, func() error { return ap.putBackSafety(ctx, s, step.Volume) })
	case step.Kind == plan.StepClean && step.Volume != "":
		ap.step(s.Name, step.Kind, step.Arg, step.Detail, func() error {
			return ap.Runtime.RemoveVolume(context.WithoutCancel(ctx), step.Volume)
		})
	case step.Kind == plan.StepClean:
		ap.step(s.Name, step.Kind, step.Arg, step.Detail, func() error {
			// A candidate the proxy served (a cutover killed after its switch) finishes its
			// requests in flight first.
			ap.proxy.drainLeftover(ctx, s, step.ContainerID)
			return ap.Runtime.RemoveContainer(context.WithoutCancel(ctx), step.ContainerID)
		})
	case ch.Takeover != nil && ch.Takeover.ID == step.ContainerID:
		ap.rel.keepSetAside(ctx, s, ch.Takeover, step.Detail)
	default:
		ap.rel.keepOther(ctx, s, step.ContainerID, step.Detail)
		ap.rel.prune(context.WithoutCancel(ctx), s)
	}
	for i, c := range st.Others {
		if c.ID == step.ContainerID {
			st.Others = append(st.Others[:i:i], st.Others[i+1:]...)
			break
		}
	}
}

// putBackSafety makes a database's volume again from the safety copy an interrupted held
// migration left, then removes the copy: the stopped old release is started on its own data.
func (ap *applyRun) putBackSafety(ctx context.Context, s *config.Service, safety string) error {
	ctx = context.WithoutCancel(ctx)
	var target string
	vols, err := ap.Runtime.Volumes(ctx, ap.Project.Name)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if v.Name == safety && v.Labels[plan.LabelRole] == plan.RoleSafety {
			target = v.Labels[plan.LabelVolume]
		}
	}
	if target == "" || s.Volume(target) == nil || safety != plan.SafetyVolume(ap.Project, s) {
		return fmt.Errorf("the safety copy %s names volume %q, which service.%s does not mount: copy it back by hand, then remove it", safety, target, s.Name)
	}
	helper, err := ap.hp.helperImage(ctx)
	if err != nil {
		return err
	}
	if err := ap.hp.putBackVolume(ctx, s, helper, safety, target); err != nil {
		return err
	}
	return ap.Runtime.RemoveVolume(ctx, safety)
}

// change carries out one service's change.
func (ap *applyRun) change(ctx context.Context, s *config.Service, ch *plan.Change, st *plan.ServiceState, so *ServiceOutcome, steps []*plan.Step) error {
	switch ch.Action {
	case plan.ActionDelete:
		return ap.remove(ctx, ch, steps[0])
	case plan.ActionUpdate:
		return ap.update(ctx, s, st, so)
	case plan.ActionTakeover:
		adopted, err := ap.rel.adopt(ctx, s, ch.Takeover)
		if err != nil {
			return err
		}
		return ap.deploy(ctx, s, ch, adopted, so, steps, true)
	}
	return ap.deploy(ctx, s, ch, st, so, steps, false)
}

// deploy runs a service's blue-green sequence.
func (ap *applyRun) deploy(ctx context.Context, s *config.Service, ch *plan.Change, st *plan.ServiceState, so *ServiceOutcome, steps []*plan.Step, adopting bool) error {
	d := ap.deployment(s, ch, st, so, adopting)
	d.r = newRelease(ap.Project, s, ch.NextRelease)
	return d.run(ctx, steps, notify.Notice{Release: ch.NextRelease}, d.prepare)
}

// update starts a stopped live release. If it does not come back healthy, the release before it
// is brought back (auto_rollback), through the same checks and cutover as deployer rollback.
func (ap *applyRun) update(ctx context.Context, s *config.Service, st *plan.ServiceState, so *ServiceOutcome) error {
	err := ap.rel.resume(ctx, s, ap.cutover(s, false), plan.PlanCutover(s, !ap.remote(), false), st, so)
	if err == nil || !s.Deploy.AutoRollback || len(st.Previous) == 0 || ctx.Err() != nil {
		return err
	}
	failed := st.Live.Release()
	if rerr := ap.rollback(ctx, s, 0, so); rerr != nil {
		return fmt.Errorf("%v; the rollback to an earlier release failed too: %v", err, rerr)
	}
	so.RolledBack, so.RolledBackTo = true, so.Release
	return fmt.Errorf("rolled back to release %d: release %d did not come back healthy: %v", so.Release, failed, err)
}

// remove stops and removes every container of a service no longer configured. Volumes stay.
func (ap *applyRun) remove(ctx context.Context, ch *plan.Change, step *plan.Step) error {
	return ap.step(ch.Service, step.Kind, step.Arg, step.Detail, func() error {
		// The service left this engine's list: it goes once the engines it runs on now have
		// switched, and stays if their rollout fails.
		if err := ap.gateOf(ch.Service).settled(ctx); err != nil {
			return fmt.Errorf("kept on this engine: %w", err)
		}
		for _, id := range ch.RemoveIDs {
			if err := ap.Runtime.RemoveContainer(context.WithoutCancel(ctx), id); err != nil {
				return err
			}
		}
		ap.dropRoutes(context.WithoutCancel(ctx), ch.Service)
		return nil
	})
}

// dropRoutes removes a removed service's routes from the project's proxy, so that its host
// ports are free again (not answered with an error by a route to nothing).
func (ap *applyRun) dropRoutes(ctx context.Context, service string) {
	px := ap.obs.Proxy
	if px == nil || !px.Running() {
		return
	}
	routes, err := proxyRoutes(ctx, ap.Runtime, px.ID)
	if err != nil {
		ap.warn(service, "the proxy's routes of the removed service were not read (%v): its host ports may stay held by the proxy", err)
		return
	}
	for _, r := range routes {
		if strings.HasPrefix(r.Name, service+"/") {
			if _, err := proxy.Exec(ctx, ap.Runtime, px.ID, proxy.Request{Op: "remove", Name: r.Name}); err != nil {
				ap.warn(service, "the proxy's route %s was not removed: %v", r.Name, err)
			}
		}
	}
}
