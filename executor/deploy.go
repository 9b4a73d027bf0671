package executor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/notify"
	"github.com/deployer-dev/deployer/executor/plan"
)

// deployment takes one service from its live release to another: a new one (apply) or an
// earlier one (rollback), by running the steps of its sequence in order, by their names.
type deployment struct {
	rn  *run
	s   *config.Service
	ch  *plan.Change
	st  *plan.ServiceState
	so  *ServiceOutcome
	cut cutover
	how plan.CutoverPlan // what is known of the cutover before it runs
	r   *release
	// rollback is the stopped release a rollback brings back (nil for a deploy).
	rollback *Container
	// adopting: the live release is a container being taken over.
	adopting bool

	cand    *ContainerState // the candidate, until it is removed or becomes live
	created string          // the candidate's container, created and not started yet
	shown   bool            // the candidate was shown to the operator (deployEnded hides it)
	old     *ContainerState // the live release at the cutover
	liveID  string
	seen    map[string]int // steps of each name run so far (two hooks may share a name)

	// ck runs the candidate's checks; mg is the service's migration, hd its hold when a
	// destructive one runs held.
	ck *checks
	mg *migration
	hd *hold
	// gate is where the deployment waits for the service's other engines (rollout.go): its
	// rollout, or solo when it deploys on this engine alone.
	gate gate
}

// errNothingToDeploy ends a deploy early and well: the new image is the live one, and nothing
// else changed.
var errNothingToDeploy = errors.New("nothing to deploy")

// reported is an error whose step has sent the notices already.
type reported struct{ error }

func (r reported) Unwrap() error { return r.error }

func (rn *run) deployment(s *config.Service, ch *plan.Change, st *plan.ServiceState, so *ServiceOutcome, adopting bool) *deployment {
	d := &deployment{rn: rn, s: s, ch: ch, st: st, so: so, cut: rn.cutover(s, adopting), how: plan.PlanCutover(s, !rn.remote(), adopting), adopting: adopting, seen: map[string]int{}, gate: rn.gateOf(s.Name)}
	d.ck, d.mg, d.hd = &checks{d: d}, &migration{d: d}, &hold{d: d}
	return d
}

// run runs the steps. prepare, when given, runs after the started notice and before the steps.
func (d *deployment) run(ctx context.Context, steps []*plan.Step, started notify.Notice, prepare func(context.Context) error) (err error) {
	defer func() { d.gate.ended(err) }()
	d.rn.notify(ctx, "started", d.s, started)
	defer func() {
		if d.shown {
			d.cut.deployEnded(context.WithoutCancel(ctx))
		}
	}()
	defer d.mg.removeScratch(ctx)
	if prepare != nil {
		if err := prepare(ctx); err != nil {
			return d.fail(ctx, err)
		}
	}
	for _, step := range steps {
		sctx, cancel := ctx, context.CancelFunc(func() {})
		if d.hd.held() && step.Kind != plan.StepCutover {
			sctx, cancel = context.WithDeadline(ctx, d.hd.holdUntil) // hold_timeout bounds the hold
		}
		err := d.do(sctx, step)
		cancel()
		if err != nil && d.hd.held() && !time.Now().Before(d.hd.holdUntil) && ctx.Err() == nil {
			err = fmt.Errorf("the held migration outlasted hold_timeout (%s) at step %s: %w", d.s.Migration.HoldTimeout, step.Name, err)
		}
		switch {
		case errors.Is(err, errNothingToDeploy):
			return nil
		case err != nil:
			return d.fail(ctx, err)
		}
	}
	n := notify.Notice{Release: d.r.number, LiveRelease: d.r.number, Image: d.s.Image + " (" + plan.Short(d.r.imageID) + ")"}
	if d.rollback != nil {
		n = notify.Notice{Release: d.r.number, LiveRelease: d.r.number, Reason: fmt.Sprintf("rolled back from release %d", d.ch.LiveRelease)}
	}
	d.withFigures(&n)
	d.rn.notify(ctx, "succeeded", d.s, n)
	return nil
}

// withFigures adds the migration's diff and the smoke load's figures to a notice.
func (d *deployment) withFigures(n *notify.Notice) {
	if d.mg.mig != nil {
		n.Migration = append([]string(nil), d.mg.mig.recorded()...)
	}
	if d.so.Smoke != nil {
		n.Smoke = d.so.Smoke.String()
	}
}

// prepare readies what a deploy needs before its steps: the project's network, and the proxy
// when the cutover or the checks need it.
func (d *deployment) prepare(ctx context.Context) error {
	if err := d.rn.own.ensureNetwork(ctx); err != nil {
		return err
	}
	if d.how.NeedsProxy() {
		return d.rn.proxy.ensure(ctx)
	}
	return nil
}

// do runs one step of the sequence.
func (d *deployment) do(ctx context.Context, step *plan.Step) error {
	d.seen[step.Name]++
	d.rn.cur = step
	defer func() { d.rn.cur = nil }()
	switch step.Kind {
	case plan.StepResume:
		return d.resume(ctx)
	case plan.StepBuild, plan.StepImage:
		return d.image(ctx)
	case plan.StepCandidate:
		return d.candidate(ctx)
	case plan.StepRunning:
		return d.ck.checkRunning(ctx)
	case plan.StepHealth:
		return d.ck.checkHealth(ctx)
	case plan.StepCanary:
		return d.ck.checkCanary(ctx, step)
	case plan.StepSmoke:
		return d.ck.checkSmoke(ctx)
	case plan.StepDryRun:
		return d.mg.dryRun(ctx)
	case plan.StepTrial:
		return d.mg.trial(ctx)
	case plan.StepMigrate:
		return d.mg.migrateLive(ctx)
	case plan.StepSQLite:
		return d.ck.checkSQLite(ctx, step)
	case plan.StepHook:
		return d.ck.hook(ctx, step)
	case plan.StepBackup:
		return d.backup(ctx)
	case plan.StepCutover, plan.StepStart:
		if err := d.gate.mayCutover(ctx); err != nil {
			return fmt.Errorf("%w; %s", err, d.stillServing())
		}
		return d.switchOver(ctx)
	case plan.StepVerify:
		return d.verify(ctx)
	case plan.StepCleanup:
		return d.cleanup(ctx)
	}
	return fmt.Errorf("the plan has a step %q that this deployer does not run: make the plan again with this version", step.Name)
}

// fail ends the deploy after a failed step: the candidate goes, and the failure is notified.
func (d *deployment) fail(ctx context.Context, err error) error {
	var rep reported
	if errors.As(err, &rep) {
		return rep.error
	}
	if d.hd.held() {
		err = d.hd.putBack(ctx, err)
	} else {
		// A held migration that failed before the old release stopped: its requests go on,
		// and the safety copy's volume, still empty, goes.
		d.hd.release(ctx)
		if !d.hd.copied {
			d.hd.dropSafety(ctx)
		}
	}
	d.dropCandidate(ctx)
	n := notify.Notice{Release: d.ch.NextRelease, Reason: err.Error()}
	d.withFigures(&n)
	d.rn.notify(context.WithoutCancel(ctx), "failed", d.s, n)
	return err
}

// dropCandidate removes the candidate, unless it became live.
func (d *deployment) dropCandidate(ctx context.Context) {
	if d.cand != nil {
		d.rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), d.cand.ID)
		d.cand = nil
	}
	if d.created != "" {
		d.rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), d.created)
		d.created = ""
	}
}

// stillServing says what runs after a failure before the cutover.
func (d *deployment) stillServing() string {
	if d.st.Live == nil {
		return "nothing was live before, and nothing is live now"
	}
	return fmt.Sprintf("release %d (%s) is still live", d.st.Live.Release(), d.st.Live.Name)
}

func stillServingOld(old *ContainerState) string {
	if old == nil {
		return "nothing was live before, and nothing is live now"
	}
	return fmt.Sprintf("release %s (%s) is still live", old.Spec.Labels[plan.LabelRelease], old.Name)
}

// resume starts the live release when it is stopped: the service must not stay down while the
// new release is prepared, nor if it fails. A rollback goes on without it.
func (d *deployment) resume(ctx context.Context) error {
	err := d.rn.rel.resume(ctx, d.s, d.cut, d.how, d.st, d.so)
	if err != nil && d.rollback != nil {
		d.rn.warn(d.s.Name, "the live release does not start (%v); rolling back anyway", err)
		return nil
	}
	return err
}

// candidate creates and starts <container_name>-green with the new release (a held migration
// created it before its hold).
func (d *deployment) candidate(ctx context.Context) error {
	rn, s := d.rn, d.s
	return rn.step(s.Name, plan.StepCandidate, "", "", func() error {
		id := d.created
		if id == "" {
			var err error
			if id, err = d.createCandidate(ctx, d.candidateSpec()); err != nil {
				return err
			}
		}
		d.created = ""
		cand, err := d.startCreated(ctx, id)
		if err != nil {
			return err
		}
		d.cand, d.shown = cand, true
		d.cut.candidateStarted(ctx, cand)
		return nil
	})
}

// candidateSpec is the candidate's container.
func (d *deployment) candidateSpec() ContainerSpec {
	spec := d.r.spec(d.s.ContainerName+plan.CandidateSuffix, plan.RoleCandidate, true)
	d.cut.candidateSpec(&spec)
	return spec
}

// startCandidate creates and starts a container of the new release as a candidate (the
// candidate, or the trial on a migrated clone). It returns the container's ID once created,
// and its state once started.
func (d *deployment) startCandidate(ctx context.Context, spec ContainerSpec) (string, *ContainerState, error) {
	id, err := d.createCandidate(ctx, spec)
	if err != nil {
		return "", nil, err
	}
	st, err := d.startCreated(ctx, id)
	if err != nil {
		return "", nil, err
	}
	return id, st, nil
}

// createCandidate creates a candidate's container.
func (d *deployment) createCandidate(ctx context.Context, spec ContainerSpec) (string, error) {
	id, err := d.rn.createRelease(ctx, spec)
	if errors.Is(err, ErrNameTaken) {
		// Not ours to remove blindly: say what holds it.
		return "", d.rn.own.nameTaken(ctx, spec.Name, "service."+d.s.Name+"'s candidate")
	}
	return id, err
}

// startCreated starts a created candidate; one that does not start is removed.
func (d *deployment) startCreated(ctx context.Context, id string) (*ContainerState, error) {
	rn := d.rn
	if err := rn.Runtime.StartContainer(ctx, id); err != nil {
		err = rn.own.addressHint(ctx, id, err)
		rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
		return nil, portHint(err, d.r.ports, true)
	}
	st, err := rn.Runtime.Inspect(ctx, id)
	if err != nil {
		rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
	}
	return st, err
}

// backup backs up the live release's volumes right before the cutover.
func (d *deployment) backup(ctx context.Context) error {
	s, live := d.s, d.st.Live
	err := d.rn.step(s.Name, plan.StepBackup, "", "", func() error {
		m, err := d.rn.backups().takeWith(ctx, s, live, "before the cutover to release "+strconv.Itoa(d.r.number), s.Backup.Keep, migrationRecord(d.mg.mig))
		if m != nil {
			d.mg.backupID = m.ID
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("backup: %w; %s", err, d.stillServing())
	}
	return nil
}

// switchOver makes the candidate's release live. Once it starts, it finishes.
func (d *deployment) switchOver(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted before cutover; %s", d.stillServing())
	}
	if live := d.st.Live; live != nil {
		old, err := d.rn.Runtime.Inspect(ctx, live.ID)
		if err != nil {
			return err
		}
		if d.adopting {
			old.Spec.Labels = live.Labels // kept as the previous release with the deployer's labels
		}
		d.old = old
	}
	liveID, err := d.cut.switchTo(context.WithoutCancel(ctx), d.r, d.old, d.cand, d.ch)
	if err != nil {
		return err
	}
	d.liveID = liveID
	d.hd.holdEnded()
	if liveID == d.cand.ID {
		d.cand = nil // it is the live release now
	}
	d.so.Release = d.r.number
	if d.so.ImageID == "" {
		d.so.ImageID = d.r.imageID // a rollback's
	}
	return nil
}

// verify health-checks the new live release; on failure it goes back to the old one
// (auto_rollback), or says that the failed release is live.
func (d *deployment) verify(ctx context.Context) error {
	err := d.cut.verify(ctx, d.liveID)
	if err == nil {
		err = d.watch(ctx)
	}
	others := d.gate.verified(ctx, err) // another engine of the rollout failed
	if err == nil {
		err = others
	}
	if err == nil {
		return nil
	}
	if others != nil && (d.old == nil || !d.s.Deploy.AutoRollback) {
		why := "there is no previous release here to go back to"
		if d.old != nil {
			why = "auto_rollback is off"
		}
		return fmt.Errorf("release %d stays live on this engine (%s) although %v", d.r.number, why, others)
	}
	if d.old == nil || !d.s.Deploy.AutoRollback {
		d.so.Release = 0
		return fmt.Errorf("release %d is live but failed verification: %w", d.r.number, err)
	}
	if d.mg.mig != nil && d.mg.mig.HeldSeconds > 0 {
		// The old release cannot run on the schema the held migration made, and the new one
		// took requests since: neither going back nor putting the old data back is safe.
		return fmt.Errorf("release %d is live but failed verification: %w; release %d is not brought back, it cannot run on the migrated schema: the data from before the migration is kept in volume %s and backup %s", d.r.number, err, d.st.Live.Release(), d.hd.safety, d.mg.backupID)
	}
	wctx := context.WithoutCancel(ctx)
	d.dropCandidate(wctx)
	reason := fmt.Sprintf("release %d failed after cutover: %v", d.r.number, err)
	if others != nil {
		reason = fmt.Sprintf("release %d went back with the other engines: %v", d.r.number, others)
	}
	return reported{d.switchBack(wctx, reason)}
}

// watch keeps checking a switched engine of a rollout for rollout.wait before the next batch
// switches (the last batch too, before the rollout ends): one failed verification ends it,
// and every engine switched goes back. The watch is one step; its checks, one verify
// each, are not steps of their own (a 30s wait would print a line per check).
func (d *deployment) watch(ctx context.Context) error {
	wait := d.gate.watchFor()
	if wait <= 0 {
		return nil
	}
	rn := d.rn
	return rn.step(d.s.Name, plan.StepVerify, "", fmt.Sprintf("watch release %d for %s (rollout.wait) before the rollout goes on", d.r.number, plan.Dur(wait)), func() error {
		rn.quiet++
		defer func() { rn.quiet-- }()
		until := time.Now().Add(wait)
		for time.Now().Before(until) {
			if err := d.cut.verify(ctx, d.liveID); err != nil {
				return fmt.Errorf("while watched for %s: %w", plan.Dur(wait), err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(time.Until(until), time.Second)):
			}
		}
		return nil
	})
}

// switchBack puts the previous release back after the new one failed verification.
func (d *deployment) switchBack(ctx context.Context, reason string) error {
	rn, s, r := d.rn, d.s, d.r
	prev := d.old.Spec.Labels[plan.LabelRelease]
	var logs string
	err := rn.step(s.Name, plan.StepRollback, "", fmt.Sprintf("switch back from release %d to release %s", r.number, prev), func() error {
		logs, _ = rn.Runtime.Logs(ctx, d.liveID, logLines)
		return d.cut.switchBack(ctx, r, d.liveID, d.old)
	})
	d.so.RolledBack = true
	if strings.TrimSpace(logs) != "" {
		reason += "; its last output:\n" + indent(logs)
	}
	if err != nil {
		d.so.Release = 0
		msg := fmt.Errorf("%s; the rollback to release %s failed too: %v. Nothing may be serving: run `docker start %s` or `deployer rollback service.%s`", reason, prev, err, d.old.ID[:12], s.Name)
		rn.notify(ctx, "failed", s, notify.Notice{Release: r.number, Reason: msg.Error()})
		return msg
	}
	n, _ := strconv.Atoi(prev)
	d.so.Release, d.so.RolledBackTo = n, n
	rn.notify(ctx, "rolled_back", s, notify.Notice{Release: r.number, LiveRelease: n, Reason: reason})
	return fmt.Errorf("rolled back to release %s: %s", prev, reason)
}

// cleanup retires the old release (kept as a previous release) and removes the candidate and
// the releases beyond keep_releases. A rollback's stopped copy of the release it brought back
// goes too: that release is live again in a new container.
func (d *deployment) cleanup(ctx context.Context) error {
	rn, s := d.rn, d.s
	wctx := context.WithoutCancel(ctx)
	d.hd.uploadSafety(wctx) // the new release serves: the hold is over
	d.hd.dropSafety(wctx)
	err := rn.step(s.Name, plan.StepCleanup, "", "", func() error {
		if d.old != nil {
			d.cut.retire(wctx, d.old)
		}
		d.dropCandidate(wctx)
		return rn.rel.retire(wctx, s, d.old)
	})
	if err != nil {
		return reported{err} // the new release is live: no failure to notify
	}
	if d.rollback != nil {
		rn.Runtime.RemoveContainer(wctx, d.rollback.ID)
	}
	if d.s.Migration != nil {
		d.mg.dropMarks(wctx)
	}
	return nil
}
