package executor

import (
	"context"
	"fmt"

	"github.com/deployer-dev/deployer/executor/plan"
)

// restartCutover stops the live release and starts the new one under its name and ports: a
// window without service, as long as the new release takes to start.
type restartCutover struct {
	cutoverBase
	// proxied: the old release was served by the proxy (the proxy cutover), which gave its
	// host ports to the new release in this deploy; going back routes them to it again.
	proxied bool
}

func (c *restartCutover) candidateSpec(*ContainerSpec)                      {}
func (c *restartCutover) candidateStarted(context.Context, *ContainerState) {}
func (c *restartCutover) deployEnded(context.Context)                       {}

// switchTo stops the old live release and starts the new one under the live name. Each part is
// idempotent, so an apply interrupted here is finished by the next one.
func (c *restartCutover) switchTo(ctx context.Context, r *release, old, cand *ContainerState, ch *plan.Change) (string, error) {
	rn, s := c.rn, c.Service
	// The candidate shares the volumes: stop it before the new live release starts, so that
	// one copy of the new release writes to them.
	rn.rel.stopRelease(ctx, s, cand.ID, "the candidate")
	name := plan.StepCutover
	if old == nil {
		name = plan.StepStart
	}
	var liveID string
	err := rn.step(s.Name, name, "", "", func() (err error) {
		if old != nil {
			if err := rn.rel.stopRelease(ctx, s, old.ID, "release "+old.Spec.Labels[plan.LabelRelease]); err != nil {
				return err
			}
			rn.crash(plan.PointCutoverStopped)
			if old.Name != oldName(s, ch.LiveRelease) {
				if err := rn.Runtime.RenameContainer(ctx, old.ID, oldName(s, ch.LiveRelease)); err != nil {
					rn.Runtime.StartContainer(ctx, old.ID)
					return err
				}
			}
			rn.crash(plan.PointCutoverRenamed)
			// A release of the proxy cutover: the proxy holds its host ports, which the new
			// release publishes itself.
			if !plan.PublishesItself(s, old) {
				if c.proxied, err = rn.proxy.takePorts(ctx, s); err != nil {
					rn.rel.startAgain(ctx, s, old)
					return err
				}
			}
		}
		id, err := rn.createRelease(ctx, r.spec(s.ContainerName, plan.RoleLive, false))
		if err == nil {
			rn.crash(plan.PointCutoverCreated)
			err = rn.Runtime.StartContainer(ctx, id)
			if err != nil {
				err = rn.own.addressHint(ctx, id, err)
				rn.Runtime.RemoveContainer(ctx, id)
				err = portHint(err, r.ports, false)
			}
		}
		if err != nil {
			if old != nil {
				rn.rel.startAgain(ctx, s, old)
				c.routeBack(ctx, old)
			}
			return err
		}
		liveID = id
		return nil
	})
	if err != nil && old != nil {
		return "", fmt.Errorf("cutover to release %d: %w; release %d (%s) was started again", r.number, err, ch.LiveRelease, s.ContainerName)
	}
	return liveID, err
}

func (c *restartCutover) verify(ctx context.Context, liveID string) error {
	return c.verifyHostPort(ctx, liveID)
}

// switchBack stops the failed release and starts the old one again under the live name.
func (c *restartCutover) switchBack(ctx context.Context, r *release, liveID string, old *ContainerState) error {
	c.rn.rel.stopRelease(ctx, c.Service, liveID, fmt.Sprintf("release %d", r.number))
	if err := c.rn.Runtime.RemoveContainer(ctx, liveID); err != nil {
		return err
	}
	if err := c.rn.rel.startAgain(ctx, c.Service, old); err != nil {
		return err
	}
	if err := c.routeBack(ctx, old); err != nil {
		return err
	}
	return c.verifyHostPort(ctx, old.ID)
}

// publishes reports whether a release publishes a host port of the service itself.
func (c *restartCutover) publishes(ctx context.Context, id string) bool {
	st, err := c.rn.Runtime.Inspect(ctx, id)
	return err != nil || plan.PublishesItself(c.Service, st)
}

// routeBack gives the proxy the host ports back, routed to the old release started again, when
// the cutover took them from it.
func (c *restartCutover) routeBack(ctx context.Context, old *ContainerState) error {
	if !c.proxied {
		return nil
	}
	again, err := c.rn.Runtime.Inspect(ctx, old.ID) // its address may have changed
	if err != nil {
		return err
	}
	_, err = c.rn.proxy.setRoutes(ctx, c.Service, again)
	return err
}

// retire has nothing to do: the cutover stopped the old release already.
func (c *restartCutover) retire(context.Context, *ContainerState) {}

func (c *restartCutover) resumed(ctx context.Context, live *Container) error {
	if len(c.Service.Ports) > 0 && (plan.RecordedCutover(*live, false) || c.rn.proxy.id != "") && !c.publishes(ctx, live.ID) {
		// A release the proxy serves (of the proxy cutover) until a cutover gives its ports
		// to the next release: routed to again (its address may have changed).
		if err := c.rn.proxy.resync(ctx); err != nil {
			return err
		}
	} else if c.NeedsProxy() {
		if err := c.rn.proxy.ensure(ctx); err != nil {
			return err
		}
	}
	return c.verifyHostPort(ctx, live.ID)
}
