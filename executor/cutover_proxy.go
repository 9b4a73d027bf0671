package executor

import (
	"context"
	"fmt"
	"strings"

	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/probe"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// proxyCutover switches the project's proxy from the live release to the new one for new
// requests at once; the old release finishes its requests in flight (drain) once the new one
// is verified. No window without service.
type proxyCutover struct {
	cutoverBase
	// portMoved: the old release published the host port itself and gave it to the proxy in
	// this deploy, so going back is a restart, not a route switch.
	portMoved bool
}

// candidateSpec publishes nothing: published ports outlive the deploy on the container that
// becomes live. The proxy shows the candidate on its port instead, for the deploy's length.
func (c *proxyCutover) candidateSpec(spec *ContainerSpec) { spec.Ports = nil }

func (c *proxyCutover) candidateStarted(ctx context.Context, cand *ContainerState) {
	c.rn.proxy.showCandidate(ctx, c.Service, cand)
}

func (c *proxyCutover) deployEnded(ctx context.Context) { c.rn.proxy.hideCandidate(ctx, c.Service) }

// switchTo routes the service to the candidate, which takes the live name; the old release
// keeps its requests in flight until it is drained after verification.
func (c *proxyCutover) switchTo(ctx context.Context, r *release, old, cand *ContainerState, ch *plan.Change) (string, error) {
	rn, s := c.rn, c.Service
	name := plan.StepCutover
	if old == nil {
		name = plan.StepStart
	}
	err := rn.step(s.Name, name, "", "", func() error {
		if err := c.route(ctx, old, cand, ch); err != nil {
			return err
		}
		rn.crash(plan.PointCutoverSwitched)
		if old != nil && old.Name != oldName(s, ch.LiveRelease) {
			if err := rn.Runtime.RenameContainer(ctx, old.ID, oldName(s, ch.LiveRelease)); err != nil {
				return err
			}
		}
		rn.crash(plan.PointCutoverSetAside)
		if err := rn.Runtime.RenameContainer(ctx, cand.ID, s.ContainerName); err != nil {
			return err
		}
		return rn.Runtime.SetRestart(ctx, cand.ID, "unless-stopped")
	})
	if err != nil {
		if old != nil {
			rn.proxy.setRoutes(ctx, s, old)
		}
		return "", fmt.Errorf("cutover to release %d: %w; %s", r.number, err, stillServingOld(old))
	}
	return cand.ID, nil
}

// route points the service's routes at the candidate. When the old release publishes the host
// port itself (deployed with the restart cutover, or a container being taken over), this one
// switch to the proxy is a restart: the old release stops so that the proxy can take the port.
func (c *proxyCutover) route(ctx context.Context, old, cand *ContainerState, ch *plan.Change) error {
	rn, s := c.rn, c.Service
	_, err := rn.proxy.setRoutes(ctx, s, cand)
	if err == nil || old == nil || !strings.Contains(err.Error(), "is taken") || len(old.Ports) == 0 {
		return err
	}
	who := fmt.Sprintf("release %d publishes the host port itself (restart cutover)", ch.LiveRelease)
	if c.Adopting {
		who = fmt.Sprintf("the container being taken over (%s) publishes the host port itself", old.Name)
	}
	rn.warn(s.Name, "%s: stopping it so the proxy can take the port; this one switch has a window without service, as long as a restart's", who)
	c.portMoved = true
	if err := rn.rel.stopRelease(ctx, s, old.ID, "release "+old.Spec.Labels[plan.LabelRelease]); err != nil {
		return err
	}
	if _, err := rn.proxy.setRoutes(ctx, s, cand); err != nil {
		rn.Runtime.StartContainer(ctx, old.ID)
		return err
	}
	return nil
}

// verify checks the new live release through the proxy's port, and that the proxy did not fail
// back to the old release (which happens when the new one cannot be reached).
func (c *proxyCutover) verify(ctx context.Context, liveID string) error {
	rn, s := c.rn, c.Service
	return rn.step(s.Name, plan.StepVerify, "", "", func() error {
		live := &ContainerState{ID: liveID, Name: s.ContainerName}
		alive := func() error {
			if err := rn.alive(ctx, live); err != nil {
				return err
			}
			return rn.proxy.routesOn(ctx, s, liveID)
		}
		port := s.HTTPPort()
		if s.HealthCheck == nil || port == nil {
			return settled(ctx, alive)
		}
		h := s.HealthCheck
		url := c.probes().liveURL(port, h.Path)
		ch := probe.Check{URL: url, Status: h.Status, Timeout: h.Timeout}
		if err := c.probes().until(ctx, ch, h.Interval, h.Healthy, h.Deadline, alive); err != nil {
			return fmt.Errorf("health check GET %s through the proxy: %w", url, err)
		}
		return alive()
	})
}

// switchBack routes the service back to the old release, which still runs (it drains only
// after verification); one that gave its host port to the proxy in this deploy gets it back,
// as in a restart.
func (c *proxyCutover) switchBack(ctx context.Context, r *release, liveID string, old *ContainerState) error {
	rn, s := c.rn, c.Service
	if c.portMoved {
		for _, p := range s.Ports {
			rn.proxy.ctl(ctx, proxy.Request{Op: "remove", Name: routeName(s, p)})
		}
		rn.Runtime.RemoveContainer(ctx, liveID)
		if err := rn.rel.startAgain(ctx, s, old); err != nil {
			return err
		}
		return c.verifyHostPort(ctx, old.ID)
	}
	if _, err := rn.proxy.setRoutes(ctx, s, old); err != nil {
		return err
	}
	if failed, _ := rn.Runtime.Inspect(ctx, liveID); failed != nil {
		rn.proxy.drain(ctx, s, failed)
	}
	rn.Runtime.RemoveContainer(ctx, liveID)
	if err := rn.Runtime.RenameContainer(ctx, old.ID, s.ContainerName); err != nil && !strings.Contains(err.Error(), "same name") {
		return err
	}
	return c.verify(ctx, old.ID)
}

// retire lets the old release finish its requests in flight, then stops it.
func (c *proxyCutover) retire(ctx context.Context, old *ContainerState) {
	if err := c.rn.proxy.drain(ctx, c.Service, old); err != nil {
		c.rn.warn(c.Service.Name, "drain: %v", err)
	}
	c.rn.rel.stopRelease(ctx, c.Service, old.ID, "release "+old.Spec.Labels[plan.LabelRelease])
}

// resumed points the routes at a live release started again (its address may have changed with
// the restart) and checks it through the proxy. A container being taken over publishes its
// port itself: it is checked there.
func (c *proxyCutover) resumed(ctx context.Context, live *Container) error {
	if c.Adopting {
		if err := c.rn.proxy.ensure(ctx); err != nil {
			return err
		}
		return c.verifyHostPort(ctx, live.ID)
	}
	if err := c.rn.proxy.resync(ctx); err != nil {
		return err
	}
	return c.verify(ctx, live.ID)
}
