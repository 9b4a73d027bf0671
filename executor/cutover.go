package executor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/probe"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// A cutover moves a service's traffic from its live release to another one, and back when the
// other one fails. The restart cutover stops the live release and starts the new one under its
// name and ports, with a window without service; the proxy cutover switches the project's
// proxy from one release to the other, without one. Everything that differs between the two is
// in their implementations: nothing else asks which one a service uses.
// What is known of a cutover before anything runs (what plan says of it, its kill points,
// whether it needs the proxy) is a plan.CutoverPlan, built from the service alone (plan/cutover_plan.go);
// the interface has the actions.
type cutover interface {
	// probes makes the HTTP checks of the service's releases.
	probes() prober
	// candidateSpec adapts the candidate's container; candidateStarted and deployEnded show
	// and stop showing a started candidate to the operator.
	candidateSpec(spec *ContainerSpec)
	candidateStarted(ctx context.Context, cand *ContainerState)
	deployEnded(ctx context.Context)
	// switchTo makes the candidate's release live, and returns the live container. On failure
	// the old release serves again and the error says so; the candidate is the caller's to
	// remove.
	switchTo(ctx context.Context, r *release, old, cand *ContainerState, ch *plan.Change) (liveID string, err error)
	// verify health-checks the new live release where its users reach it.
	verify(ctx context.Context, liveID string) error
	// switchBack makes the old release live again after the new one failed verification.
	switchBack(ctx context.Context, r *release, liveID string, old *ContainerState) error
	// retire lets the old release go once the new one is verified (it is kept as a previous
	// release afterwards).
	retire(ctx context.Context, old *ContainerState)
	// resumed health-checks a live release that was started again.
	resumed(ctx context.Context, live *Container) error
}

// newCutover returns the cutover of a service. rn is nil at plan time, when only the plan's
// descriptions are asked for.
func newCutover(s *config.Service, local bool, rn *run) cutover {
	return newCutoverOf(s, local, rn, false)
}

// newCutoverOf returns the cutover of a service whose live release may be a container being
// taken over (adopting), which publishes its ports itself.
func newCutoverOf(s *config.Service, local bool, rn *run, adopting bool) cutover {
	base := cutoverBase{CutoverPlan: plan.PlanCutover(s, local, adopting), rn: rn}
	if base.Proxy {
		base.inside = true
		return &proxyCutover{cutoverBase: base}
	}
	base.inside = !local
	return &restartCutover{cutoverBase: base}
}

// cutover returns a service's cutover for this run.
func (rn *run) cutover(s *config.Service, adopting bool) cutover {
	return newCutoverOf(s, !rn.remote(), rn, adopting)
}

// cutoverBase is what both cutovers share: what is known of them before they run (the
// service, the engine, a takeover), and where the checks run from.
type cutoverBase struct {
	plan.CutoverPlan
	rn     *run
	inside bool // the checks run from inside the proxy
}

func (c *cutoverBase) takingOver() bool { return c.Adopting }

func (c *cutoverBase) probes() prober { return prober{rn: c.rn, inside: c.inside} }

// verifyHostPort health-checks a live release through its host port (a release that has no
// health check must keep running).
func (c *cutoverBase) verifyHostPort(ctx context.Context, liveID string) error {
	s, rn := c.Service, c.rn
	port := s.HTTPPort()
	return rn.step(s.Name, plan.StepVerify, "", "", func() error {
		live := &ContainerState{ID: liveID, Name: s.ContainerName}
		alive := func() error { return rn.alive(ctx, live) }
		if s.HealthCheck == nil || port == nil {
			return settled(ctx, alive)
		}
		h := s.HealthCheck
		pr := c.probes()
		url := pr.liveURL(port, h.Path)
		ch := probe.Check{URL: url, Status: h.Status, Timeout: h.Timeout}
		if err := pr.until(ctx, ch, h.Interval, h.Healthy, h.Deadline, alive); err != nil {
			return fmt.Errorf("health check GET %s: %w", url, err)
		}
		return nil
	})
}

// prober makes the HTTP checks of a service: from the deployer, or from inside the proxy, on
// the engine's host (the proxy cutover's, and every check on a remote engine, whose candidates
// publish their ports on its 127.0.0.1).
type prober struct {
	rn     *run
	inside bool
}

func (p prober) viaProxy() bool { return p.inside && p.rn.proxy.id != "" }

// get makes one probe attempt.
func (p prober) get(ctx context.Context, c probe.Check) probe.Result {
	if !p.viaProxy() {
		return probe.Get(ctx, c)
	}
	return probeResult(p.rn.proxy.ctl(ctx, proxy.Request{Op: "probe", URL: c.URL, Timeout: c.Timeout}))
}

// until runs a health check to its end: healthy passes in a row, every interval, within
// deadline, alive checked meanwhile (a dead container fails it at once). From the proxy it is
// one exec for the whole check instead of one per attempt (an exec starts a process in the
// proxy's container: on a remote engine each is several round trips); alive is then checked
// beside it, every interval but at most 5 times a second.
func (p prober) until(ctx context.Context, c probe.Check, interval time.Duration, healthy int, deadline time.Duration, alive func() error) error {
	if !p.viaProxy() {
		return probe.UntilWith(ctx, p.get, c, interval, healthy, deadline, alive)
	}
	if err := ctx.Err(); err != nil {
		return err // interrupted: no check passes
	}
	if alive != nil {
		if err := alive(); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	died := make(chan error, 1)
	if alive != nil {
		go func() {
			for {
				select {
				case <-wctx.Done():
					return
				case <-time.After(max(interval, 200*time.Millisecond)):
				}
				if err := alive(); err != nil && wctx.Err() == nil {
					died <- err
					cancel()
					return
				}
			}
		}()
	}
	resp, err := p.rn.proxy.ctl(wctx, proxy.Request{Op: "until", Until: &proxy.Until{Check: c, Interval: interval, Healthy: healthy, Deadline: deadline}})
	select {
	case err := <-died:
		return err
	default:
	}
	if err != nil && strings.Contains(err.Error(), `unknown op "until"`) {
		return probe.UntilWith(ctx, p.get, c, interval, healthy, deadline, alive) // an older proxy
	}
	if err == nil && resp != nil && !resp.OK {
		err = errors.New(resp.Error)
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr // interrupted meanwhile: the check did not finish here
	}
	return err
}

// probeResult is the result of a probe the proxy made.
func probeResult(resp *proxy.Response, err error) probe.Result {
	switch {
	case err != nil:
		return probe.Result{Err: err}
	case resp.Error != "":
		return probe.Result{Err: errors.New(resp.Error)}
	}
	return probe.Result{Status: resp.Status, Body: resp.Body}
}

// load sends a smoke load: from the proxy when the checks run from there, else from here.
func (p prober) load(ctx context.Context, l probe.Load) (*probe.LoadResult, error) {
	if !p.viaProxy() {
		return l.Run(ctx), nil
	}
	resp, err := p.rn.proxy.ctl(ctx, proxy.Request{Op: "smoke", Load: &l})
	if err != nil {
		return nil, err
	}
	if resp.Load == nil {
		return nil, errors.New("the proxy sent no figures of the smoke load")
	}
	return resp.Load, nil
}

// candidateURL is where the candidate's HTTP port answers a check.
func (p prober) candidateURL(cand *ContainerState, port *config.Port, path string) string {
	if p.viaProxy() {
		if addr, err := p.rn.own.backendAddr(cand, port.Container); err == nil {
			return "http://" + addr + path
		}
	}
	return fmt.Sprintf("http://%s:%d%s", p.rn.probeHost(), cand.Ports[port.Container], path)
}

// liveURL is where the live release's users reach its HTTP port.
func (p prober) liveURL(port *config.Port, path string) string {
	host := p.rn.probeHost()
	if p.viaProxy() && p.rn.remote() {
		host = "127.0.0.1" // the proxy has the engine's host's network
	}
	return fmt.Sprintf("http://%s:%d%s", host, port.Host, path)
}

// remote reports whether the engine is on another machine than the deployer.
func (rn *run) remote() bool {
	return rn.Remote || !plan.LocalEngine("tcp://"+net.JoinHostPort(rn.probeHost(), "0"))
}

// oldName is where the previous live container waits during a cutover, until it is retired.
func oldName(s *config.Service, release int) string {
	return fmt.Sprintf("%s-old-%d", s.ContainerName, release)
}

// stopRelease stops a container of the service (SIGTERM, then SIGKILL after stop_timeout), and
// says so when it had to be killed: every stop of it then waits the whole stop_timeout, which
// is what a shell script as PID 1 does, since PID 1 ignores SIGTERM without a handler.
func (rl *releases) stopRelease(ctx context.Context, s *config.Service, id, what string) error {
	rn := rl.rn
	start := time.Now()
	if err := rn.Runtime.StopContainer(ctx, id, s.Deploy.StopTimeout); err != nil {
		return err
	}
	if time.Since(start) < s.Deploy.StopTimeout {
		return nil
	}
	st, err := rn.Runtime.Inspect(ctx, id)
	if err != nil || st.ExitCode != 137 {
		return nil
	}
	hint := fmt.Sprintf("set init = true on service.%s, so that an init process forwards the signal to it", s.Name)
	if st.Spec.Init {
		hint = "it runs under init already: make the app stop on SIGTERM, or raise deploy.stop_timeout"
	}
	rn.warn(s.Name, "%s did not stop within stop_timeout (%s) and was killed: its main process does not stop on SIGTERM (a shell script running as PID 1 does not); %s", what, s.Deploy.StopTimeout, hint)
	return nil
}

// startAgain puts a release back under the live name and starts it.
func (rl *releases) startAgain(ctx context.Context, s *config.Service, old *ContainerState) error {
	rn := rl.rn
	if err := rn.Runtime.RenameContainer(ctx, old.ID, s.ContainerName); err != nil && !strings.Contains(err.Error(), "same name") {
		return err
	}
	return rn.Runtime.StartContainer(ctx, old.ID)
}

// portHint turns the engine's "port is already allocated" into what to do.
func portHint(err error, ports []*config.Port, candidate bool) error {
	msg := err.Error()
	if !strings.Contains(msg, "already allocated") && !strings.Contains(msg, "address already in use") {
		return err
	}
	which := "host"
	if candidate {
		which = "candidate"
	}
	var list []string
	for _, p := range ports {
		n := p.Host
		if candidate {
			n = p.Candidate
		}
		list = append(list, strconv.Itoa(n))
	}
	return fmt.Errorf("%s port %s is taken by another process or container: free it or choose another port (%v)", which, strings.Join(list, ", "), err)
}
