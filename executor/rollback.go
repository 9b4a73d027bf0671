package executor

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/notify"
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
}

// Releases lists a service's releases, newest first: the live one and the previous ones kept.
// Role says what each is now (labels say what it was created as: a proxied release goes live
// as the candidate it was created as).
func Releases(obs *Observed, service string) []ReleaseInfo {
	st := obs.Services[service]
	if st == nil {
		return nil
	}
	var out []ReleaseInfo
	add := func(c *Container, role string) {
		created := c.Created
		if t, err := time.Parse(time.RFC3339, c.Labels[LabelCreatedAt]); err == nil {
			created = t
		}
		out = append(out, ReleaseInfo{Release: c.Release(), Role: role, Container: c.Name, Image: c.ImageRef(), ImageID: c.ImageID,
			Created: created, Source: c.Labels[LabelSource], State: c.State})
	}
	if st.Live != nil {
		add(st.Live, RoleLive)
	}
	for _, c := range st.Previous {
		add(c, RolePrevious)
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
	a.red = newRedactor(a.Project)
	s := a.Project.Service(service)
	if s == nil {
		return nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	so := &ServiceOutcome{Service: service, Action: "rollback"}
	if err := a.Runtime.Ping(ctx); err != nil {
		return nil, err
	}
	unlock, err := a.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := a.readKey(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	err = a.rollback(ctx, s, to, so)
	so.Seconds = time.Since(start).Seconds()
	if err != nil {
		so.Error = a.red.redact(err.Error())
	}
	a.emit(Event{Type: EventResult, Service: service, Outcome: outcomeOf(err), Detail: so.Error, Release: so.Release, RolledBack: so.RolledBack, Seconds: so.Seconds})
	return so, nil
}

func (a *Applier) rollback(ctx context.Context, s *config.Service, to int, so *ServiceOutcome) error {
	obs, err := Observe(ctx, a.Runtime, a.Project.Name)
	if err != nil {
		return err
	}
	st := obs.Services[s.Name]
	if st == nil || st.Live == nil {
		return fmt.Errorf("service.%s has no live release on %s: deploy it with apply first", s.Name, a.Runtime.Host())
	}
	for _, c := range st.Candidates {
		a.Runtime.RemoveContainer(context.WithoutCancel(ctx), c.ID)
	}
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
		return fmt.Errorf("release %d is live already", to)
	case target == nil && len(kept) == 0:
		return fmt.Errorf("service.%s keeps no previous release to roll back to (deploy.keep_releases keeps them after each deploy)", s.Name)
	case target == nil:
		return fmt.Errorf("release %d of service.%s is not kept on this host; kept: %s", to, s.Name, strings.Join(kept, ", "))
	}
	if st.Live != nil && !st.Live.Running() {
		if err := a.resume(ctx, s, st, so); err != nil {
			a.warn(s.Name, "the live release does not start (%v); rolling back anyway", err)
		}
	}
	prev, err := a.Runtime.Inspect(ctx, target.ID)
	if err != nil {
		return err
	}
	if _, err := a.Runtime.ImageID(ctx, prev.ImageID); errors.Is(err, ErrNotFound) {
		return fmt.Errorf("the image of release %d (%s) is gone from the engine: it cannot be rolled back to", target.Release(), short(prev.ImageID))
	}
	r := &release{number: target.Release(), imageID: prev.ImageID, image: target.Image, cmd: prev.Spec.Cmd, env: prev.Spec.Env,
		volumes: prev.Spec.Volumes, ports: s.Ports, labels: withRole(prev.Spec.Labels, RoleCandidate), network: NetworkName(a.Project.Name),
		host: ContainerSpec{Init: prev.Spec.Init, Memory: prev.Spec.Memory, NanoCPUs: prev.Spec.NanoCPUs, LogOpts: prev.Spec.LogOpts}}
	r.labels[LabelLiveName] = s.ContainerName
	if err := a.ensureNetwork(ctx); err != nil {
		return err
	}
	if a.checksInside(s) {
		if err := a.ensureProxy(ctx); err != nil {
			return err
		}
	}
	r.labels[LabelCreatedAt] = time.Now().UTC().Format(time.RFC3339)
	a.notify(ctx, "started", s, notify.Notice{Release: r.number, Reason: fmt.Sprintf("rollback from release %d", st.Live.Release())})
	fail := func(err error) error {
		a.notify(context.WithoutCancel(ctx), "failed", s, notify.Notice{Release: r.number, Reason: err.Error()})
		return err
	}
	cand, err := a.candidate(ctx, s, r)
	if err != nil {
		return fail(err)
	}
	defer a.removeCandidateRoutes(context.WithoutCancel(ctx), s)
	removeCandidate := func() { a.Runtime.RemoveContainer(context.WithoutCancel(ctx), cand.ID) }
	if err := a.checks(ctx, s, r, cand, false); err != nil {
		removeCandidate()
		return fail(fmt.Errorf("%s; %s", err, a.stillServing(st)))
	}
	old, err := a.Runtime.Inspect(ctx, st.Live.ID)
	if err != nil {
		removeCandidate()
		return fail(err)
	}
	ch := &Change{Service: s.Name, LiveRelease: st.Live.Release(), NextRelease: r.number}
	so.ImageID = r.imageID
	if err := a.switchAndVerify(ctx, s, r, old, cand, ch, so, fail); err != nil {
		return err
	}
	// The release is live again in a new container; its stopped copy goes.
	a.Runtime.RemoveContainer(context.WithoutCancel(ctx), target.ID)
	a.notify(ctx, "succeeded", s, notify.Notice{Release: r.number, LiveRelease: r.number, Reason: fmt.Sprintf("rolled back from release %d", ch.LiveRelease)})
	return nil
}
