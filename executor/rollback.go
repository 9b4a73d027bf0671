package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/notify"
	"github.com/deployer-dev/deployer/executor/plan"
)

// ReleaseInfo is one release kept on the host.
type ReleaseInfo struct {
	Release   int       `json:"release"`
	Role      string    `json:"role"`
	Container string    `json:"container"`
	Image     string    `json:"image"`
	ImageID   string    `json:"image_id"`
	Created   time.Time `json:"created"`
	Source    string    `json:"source,omitempty"`
	State     string    `json:"state"`
	// Migration is what the migration that came with the release did (nil for none).
	Migration *backup.MigrationRecord `json:"migration,omitempty"`
}

// Releases lists a service's releases, newest first: the live one and the previous ones kept.
// Role says what each is now (labels say what it was created as: a proxied release goes live
// as the candidate it was created as).
func Releases(obs *plan.Observed, service string) []ReleaseInfo {
	st := obs.Services[service]
	if st == nil {
		return nil
	}
	var out []ReleaseInfo
	add := func(c *Container, role string) {
		created := c.Created
		if t, err := time.Parse(time.RFC3339, c.Labels[plan.LabelCreatedAt]); err == nil {
			created = t
		}
		info := ReleaseInfo{Release: c.Release(), Role: role, Container: c.Name, Image: c.ImageRef(), ImageID: c.ImageID,
			Created: created, Source: c.Labels[plan.LabelSource], State: c.State}
		if raw := c.Labels[plan.LabelMigration]; raw != "" {
			var m backup.MigrationRecord
			if json.Unmarshal([]byte(raw), &m) == nil {
				info.Migration = &m
			}
		}
		out = append(out, info)
	}
	if st.Live != nil {
		add(st.Live, plan.RoleLive)
	}
	for _, c := range st.Previous {
		add(c, plan.RolePrevious)
	}
	for _, c := range st.Candidates {
		add(c, "left over")
	}
	for _, c := range st.Others {
		add(c, "set aside")
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Release > out[j].Release })
	return out
}

// Rollback brings an earlier release back (the newest previous one when to is 0) through the
// same candidate, checks and cutover as a deploy, and rolls forward again if it fails.
func (a *Applier) Rollback(ctx context.Context, service string, to int) (*ServiceOutcome, error) {
	s := a.Project.Service(service)
	if s == nil {
		return nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	rn := a.newRun()
	unlock, err := rn.begin(ctx, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := rn.own.checkOwnership(ctx, []*config.Service{s}); err != nil {
		return nil, err
	}
	so := &ServiceOutcome{Service: service, Action: "rollback"}
	start := time.Now()
	err = rn.rollback(ctx, s, to, so)
	rn.result(so, err, start)
	return so, nil
}

// rollback brings an earlier release back.
func (rn *run) rollback(ctx context.Context, s *config.Service, to int, so *ServiceOutcome) error {
	obs, err := plan.Observe(ctx, rn.Runtime, rn.Project)
	if err != nil {
		return err
	}
	st := obs.Services[s.Name]
	if st == nil || st.Live == nil {
		return fmt.Errorf("service.%s has no live release on %s: deploy it with apply first", s.Name, rn.Runtime.Host())
	}
	target, err := rollbackTarget(s, st, to)
	if err != nil {
		return err
	}
	prev, err := rn.Runtime.Inspect(ctx, target.ID)
	if err != nil {
		return err
	}
	if _, err := rn.Runtime.ImageID(ctx, prev.ImageID); errors.Is(err, ErrNotFound) {
		return fmt.Errorf("the image of release %d (%s) is gone from the engine: it cannot be rolled back to", target.Release(), plan.Short(prev.ImageID))
	}
	ch := &plan.Change{Service: s.Name, Action: plan.ActionReplace, Container: st.Live.Name, LiveRelease: st.Live.Release(), NextRelease: target.Release()}
	d := rn.deployment(s, ch, st, so, false)
	d.r, d.rollback = earlierRelease(rn.Project, s, target, prev), target
	if err := d.prepare(ctx); err != nil {
		return err
	}
	// What an interrupted apply left goes, once the proxy (made ready above) routes to the live
	// release again: a candidate it served (a cutover killed after its switch) first finishes
	// its requests in flight.
	for _, c := range st.Candidates {
		rn.proxy.drainLeftover(ctx, s, c.ID)
		rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), c.ID)
	}
	sq := &plan.Sequencer{Project: rn.Project, Local: !rn.remote(), Redactor: rn.red}
	steps := sq.Rollback(s, ch, st.Live)
	rn.planned = steps
	return d.run(ctx, steps, notify.Notice{Release: d.r.number, Reason: fmt.Sprintf("rollback from release %d", ch.LiveRelease)}, nil)
}

// rollbackTarget is the kept release a rollback goes to: release to, or the newest kept one.
func rollbackTarget(s *config.Service, st *plan.ServiceState, to int) (*Container, error) {
	var target *Container
	var kept []string
	for _, c := range st.Previous {
		kept = append(kept, strconv.Itoa(c.Release()))
		if target == nil && (to == 0 || c.Release() == to) {
			target = c
		}
	}
	switch {
	case to == st.Live.Release():
		return nil, fmt.Errorf("release %d is live already", to)
	case target == nil && len(kept) == 0:
		return nil, fmt.Errorf("service.%s keeps no previous release to roll back to (deploy.keep_releases keeps them after each deploy)", s.Name)
	case target == nil:
		return nil, fmt.Errorf("release %d of service.%s is not kept on this host; kept: %s", to, s.Name, strings.Join(kept, ", "))
	}
	return target, nil
}
