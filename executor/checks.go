package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/probe"
)

// A failed check of the candidate leaves the live release serving; its error says so.

// checks are a deployment's checks of its candidate, in the order of the sequence: it keeps
// running, its health check, canaries, the smoke load, SQLite quick_checks, and the hooks; and
// the health and canaries of any release (a trial, a release put back).
type checks struct{ d *deployment }

// checkRunning fails when the candidate stopped (without a health check: within a short while).
func (ck *checks) checkRunning(ctx context.Context) error {
	d := ck.d
	alive := func() error { return d.rn.alive(ctx, d.cand) }
	err := d.rn.step(d.s.Name, plan.StepRunning, "", "", func() error {
		if d.s.HealthCheck != nil {
			return alive() // the health check keeps watching
		}
		return settled(ctx, alive)
	})
	if err != nil {
		return fmt.Errorf("candidate %q: %s; %s", d.cand.Name, err, d.stillServing())
	}
	return nil
}

// checkHealth probes the candidate's health check until it passes often enough in a row.
func (ck *checks) checkHealth(ctx context.Context) error {
	d := ck.d
	h, pr := d.s.HealthCheck, d.cut.probes()
	url := pr.candidateURL(d.cand, d.s.HTTPPort(), h.Path)
	err := d.rn.step(d.s.Name, plan.StepHealth, "", "", func() error {
		d.rn.log(d.s.Name, plan.StepHealth, "GET %s", url)
		return ck.healthOf(ctx, d.cand)
	})
	if err != nil {
		return fmt.Errorf("candidate %q: health check GET %s: %s; %s", d.cand.Name, h.Path, err, d.stillServing())
	}
	return nil
}

// healthOf probes a started release's health check until it passes often enough in a row,
// failing at once if the release stops.
func (ck *checks) healthOf(ctx context.Context, c *ContainerState) error {
	d := ck.d
	h, pr := d.s.HealthCheck, d.cut.probes()
	check := probe.Check{URL: pr.candidateURL(c, d.s.HTTPPort(), h.Path), Status: h.Status, Timeout: h.Timeout}
	interval := h.Interval
	if d.hd.held() && interval > heldPoll {
		interval = heldPoll // every moment of a hold is a moment of the service's requests
	}
	return pr.until(ctx, check, interval, h.Healthy, h.Deadline, func() error { return d.rn.alive(ctx, c) })
}

// canaryOf makes one request of a canary to a started release.
func (ck *checks) canaryOf(ctx context.Context, c *ContainerState, cn *config.Canary) error {
	d := ck.d
	pr := d.cut.probes()
	check := probe.Check{URL: pr.candidateURL(c, d.s.HTTPPort(), cn.Path), Status: cn.Status, BodyContains: cn.BodyContains, Timeout: 10 * time.Second}
	if res := pr.get(ctx, check); !check.OK(res) {
		return errors.New(check.Describe(res))
	}
	return nil
}

// checkCanary makes one request of a canary to the candidate.
func (ck *checks) checkCanary(ctx context.Context, step *plan.Step) error {
	d := ck.d
	var c *config.Canary
	for _, x := range d.s.Canaries {
		if x.Name == step.Arg {
			c = x
		}
	}
	if c == nil {
		return notConfigured(d.s, step)
	}
	url := d.cut.probes().candidateURL(d.cand, d.s.HTTPPort(), c.Path)
	err := d.rn.step(d.s.Name, step.Kind, step.Arg, step.Detail, func() error {
		d.rn.log(d.s.Name, step.Kind, "GET %s", url)
		return ck.canaryOf(ctx, d.cand, c)
	})
	if err != nil {
		return fmt.Errorf("candidate %q: canary %q GET %s: %s; %s", d.cand.Name, c.Name, c.Path, err, d.stillServing())
	}
	return nil
}

// checkSmoke sends the smoke load to the candidate: a miss of its error rate or p95 bound
// fails the deploy with the live release serving.
func (ck *checks) checkSmoke(ctx context.Context) error {
	d := ck.d
	sm, pr := d.s.Smoke, d.cut.probes()
	base := strings.TrimSuffix(pr.candidateURL(d.cand, d.s.HTTPPort(), "/"), "/")
	load := probe.Load{Base: base, Paths: sm.Paths, Requests: sm.Requests, Duration: sm.Duration, Concurrency: sm.Concurrency}
	var res *probe.LoadResult
	err := d.rn.step(d.s.Name, plan.StepSmoke, "", "", func() error {
		var err error
		if res, err = pr.load(ctx, load); err != nil {
			return err
		}
		d.so.Smoke = res
		d.rn.emit(Event{Type: EventSmoke, Service: d.s.Name, Step: string(plan.StepSmoke), Detail: res.String(), Smoke: res})
		if err := d.rn.alive(ctx, d.cand); err != nil {
			return err
		}
		return smokeMiss(sm, res)
	})
	if err != nil {
		return fmt.Errorf("candidate %q: smoke: %s; %s", d.cand.Name, err, d.stillServing())
	}
	return nil
}

// smokeMiss says how a smoke load missed its bounds, nil when it met them.
func smokeMiss(sm *config.Smoke, res *probe.LoadResult) error {
	var miss []string
	if res.Requests == 0 {
		miss = append(miss, "no request was answered")
	}
	if res.ErrorRate() > sm.MaxErrorRate {
		miss = append(miss, fmt.Sprintf("%d of %d requests failed (%.2f%%, max_error_rate %.2f%%; first: %s)", res.Failed, res.Requests, 100*res.ErrorRate(), 100*sm.MaxErrorRate, res.FirstFail))
	}
	if res.P95 > sm.P95 {
		miss = append(miss, fmt.Sprintf("p95 latency %s is over %s", res.P95.Round(time.Millisecond), sm.P95))
	}
	if len(miss) == 0 {
		return nil
	}
	return fmt.Errorf("%s (%s)", strings.Join(miss, "; "), res)
}

// hook runs a hook in a one-off container of the new release.
func (ck *checks) hook(ctx context.Context, step *plan.Step) error {
	d := ck.d
	var h *config.Hook
	n := d.seen[step.Name]
	for _, x := range d.s.Hooks {
		if x.When == step.Arg {
			if n--; n == 0 {
				h = x
			}
		}
	}
	if h == nil {
		return notConfigured(d.s, step)
	}
	attr := config.HookAttr(h.When, config.HookCommand)
	err := d.rn.step(d.s.Name, step.Kind, step.Arg, step.Detail, func() error {
		_, err := ck.oneOff(ctx, plan.StepKind(plan.StepName(plan.StepHook, h.When)), h.When, attr, h.Command, hookTimeout)
		return err
	})
	if err != nil {
		return fmt.Errorf("hook %q: %s; %s", h.When, err, d.stillServing())
	}
	return nil
}

// notConfigured is the error of a step that names a check or hook the configuration lacks: a
// saved plan of another configuration (its fingerprint prevents that) or a bug.
func notConfigured(s *config.Service, step *plan.Step) error {
	return fmt.Errorf("step %s: service.%s has no such check or hook: make the plan again", step.Name, s.Name)
}

// alive fails with the exit code and last log lines when the container stopped.
func (rn *run) alive(ctx context.Context, c *ContainerState) error {
	st, err := rn.Runtime.Inspect(ctx, c.ID)
	if err != nil {
		return err
	}
	if st.Running && st.Restarts == 0 {
		return nil
	}
	logs, _ := rn.Runtime.Logs(context.WithoutCancel(ctx), c.ID, logLines)
	why := fmt.Sprintf("exited with code %d", st.ExitCode)
	if st.Running {
		// The engine's restart policy brought it back; a crash is a failure all the same.
		why = fmt.Sprintf("crashed and was restarted by the engine (%s, last exit code %d)", plan.Plural(st.Restarts, "time"), st.ExitCode)
	}
	if st.OOM {
		why += " (out of memory)"
	}
	if st.Error != "" {
		why += ": " + st.Error
	}
	return fmt.Errorf("%s; last output:\n%s", why, indent(logs))
}

// settled passes when a release without a health check is still running after a short while.
func settled(ctx context.Context, alive func() error) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
	}
	return alive()
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// oneOff runs a command (the service's attribute attr) in a one-off container of the new
// image, with the service's env and volumes, within timeout; its last lines are logged under
// step, masked as output. It returns the output, and fails unless the command exits 0.
func (ck *checks) oneOff(ctx context.Context, step plan.StepKind, what, attr string, cmd []string, timeout time.Duration) (string, error) {
	d := ck.d
	rn, s, r := d.rn, d.s, d.r
	spec := r.spec(fmt.Sprintf("%s-%s-%d", s.ContainerName, strings.ReplaceAll(what, "_", "-"), r.number), plan.RoleOneOff, true)
	spec.Cmd, spec.Ports = cmd, nil
	code, logs, err := rn.hp.helperRun(ctx, spec, timeout)
	last := rn.red.Output(lastLines(logs, logLines))
	for _, l := range strings.Split(strings.TrimRight(last, "\n"), "\n") {
		if l != "" {
			rn.log(s.Name, step, "%s", l)
		}
	}
	if err == nil && code != 0 {
		err = fmt.Errorf("`%s` exited with code %d; last output:\n%s", rn.red.Command(s.Name, attr, cmd), code, indent(last))
	}
	return logs, err
}
