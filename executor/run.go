package executor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/notify"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/probe"
)

// run is the machinery that an apply, a rollback, a backup and a restore share: events and
// timed steps, the redaction of everything that leaves it, notices, the deploy lock, the kill
// points of crash tests, and what it learns of the engine once (the project's key, network,
// proxy and helper image). Each operation makes a new one.
type run struct {
	*Applier
	red    *plan.Redactor
	hasher *plan.Hasher // the project's key, once read
	net    network
	proxy  *proxyControl
	hp     *helpers
	own    *owned
	rel    *releases
	quiet  int // inside a step whose inner steps are not shown (a rollout's watch)
	// planned are the steps this run carries out (an apply's plan, a rollback's sequence) and
	// cur the one running: a step's events carry the plan's own words for it (words).
	planned []*plan.Step
	cur     *plan.Step
}

func (a *Applier) newRun() *run {
	rn := &run{Applier: a, red: plan.NewRedactor(a.Project)}
	rn.proxy = &proxyControl{rn: rn}
	rn.hp, rn.own, rn.rel = &helpers{rn: rn}, &owned{rn: rn}, &releases{rn: rn}
	return rn
}

// begin is the preamble of every operation that changes the engine: the engine answers, the
// deploy lock is taken, and (withKey) the project's key is read. The returned function ends the
// run's sessions with the proxy and releases the lock; it works after ctx is cancelled.
func (rn *run) begin(ctx context.Context, withKey bool) (func(), error) {
	if err := rn.Runtime.Ping(ctx); err != nil {
		return nil, err
	}
	unlock := func() {}
	if !rn.locked { // a fleet took it on every engine
		var err error
		if unlock, err = rn.lock(ctx); err != nil {
			return nil, err
		}
	}
	if withKey {
		key, err := rn.Runtime.ProjectKey(ctx, rn.Project.Name)
		if err == nil {
			err = plan.CheckProjectKey(rn.Project.Name, key)
		}
		if err != nil {
			unlock()
			return nil, err
		}
		rn.hasher = plan.NewHasher(key)
	}
	return func() {
		rn.proxy.close()
		unlock()
	}, nil
}

func (rn *run) emit(e Event) {
	if rn.Events == nil {
		return
	}
	e.FormatVersion = plan.FormatVersion
	if e.Engine == "" {
		e.Engine = rn.engine
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Detail = rn.red.Redact(e.Detail)
	rn.Events(e)
}

func (rn *run) warn(service, format string, args ...any) {
	rn.emit(Event{Type: EventWarning, Service: service, Detail: fmt.Sprintf(format, args...)})
}

func (rn *run) log(service string, step plan.StepKind, format string, args ...any) {
	rn.emit(Event{Type: EventLog, Service: service, Step: string(step), Detail: fmt.Sprintf(format, args...)})
}

// step runs fn as one named step, reporting its start, end and duration (not inside a quiet
// step: rn.quiet). Its start is a kill point.
func (rn *run) step(service string, kind plan.StepKind, arg, detail string, fn func() error) error {
	name := plan.StepName(kind, arg)
	detail = rn.words(service, kind, arg, detail)
	rn.crash(name)
	start := time.Now()
	if rn.quiet == 0 {
		rn.emit(Event{Type: EventStep, Service: service, Step: name, Phase: phaseStart, Detail: detail})
	}
	err := fn()
	e := Event{Type: EventStep, Service: service, Step: name, Phase: phaseEnd, Outcome: OutcomeOK, Detail: detail, Seconds: time.Since(start).Seconds()}
	var skip skipped
	switch {
	case errors.As(err, &skip):
		e.Outcome, e.Detail, err = OutcomeSkipped, string(skip), nil
	case err != nil:
		e.Outcome, e.Detail = OutcomeFailed, err.Error()
	}
	if rn.quiet == 0 {
		rn.emit(e)
	}
	return err
}

// words are what a step's events say of it. A step of the plan is run with no words of its own
// (detail ""): its events carry the plan's description of it (the step running, else the first
// of its service, kind and argument), so that what apply prints is what plan promised, written
// once, in sequence.go. A step inside another or outside any plan (a rollback's switch back, a
// rollout's watch, a drain, a restore's and destroy's steps) says its own detail.
func (rn *run) words(service string, kind plan.StepKind, arg, detail string) string {
	if detail != "" {
		return detail
	}
	if st := rn.plannedStep(service, kind, arg); st != nil {
		return st.Detail
	}
	return plan.StepName(kind, arg)
}

// plannedStep is the plan's step of a service, kind and argument: the one running, else the
// first; nil outside a plan, or for a step the plan does not have.
func (rn *run) plannedStep(service string, kind plan.StepKind, arg string) *plan.Step {
	match := func(st *plan.Step) bool {
		return st != nil && st.Service == service && st.Kind == kind && st.Arg == arg
	}
	if match(rn.cur) {
		return rn.cur
	}
	for _, st := range rn.planned {
		if match(st) {
			return st
		}
	}
	return nil
}

// plannedOr is the plan's words for a step that also runs outside plans (the lock, the
// proxy, a resume), or else its own.
func (rn *run) plannedOr(service string, kind plan.StepKind, own string) string {
	if st := rn.plannedStep(service, kind, ""); st != nil {
		return st.Detail
	}
	return own
}

// skipped ends a step as skipped, with the reason, without failing it.
type skipped string

func (s skipped) Error() string { return string(s) }

// crash stops the deployer at a kill point when a crash test asks for it. On a fleet's engine
// the point is also asked for as ENGINE/POINT ("web2/cutover": after web1 switched).
func (rn *run) crash(point string) {
	if rn.Crash != nil {
		rn.Crash(point)
		if rn.engine != "" {
			rn.Crash(rn.engine + "/" + point)
		}
	}
}

// result reports what an operation did to a service, its error redacted.
func (rn *run) result(so *ServiceOutcome, err error, start time.Time) {
	so.Seconds = time.Since(start).Seconds()
	if err != nil {
		so.Error = rn.red.Redact(err.Error())
	}
	rn.emit(Event{Type: EventResult, Service: so.Service, Outcome: outcomeOf(err), Detail: so.Error, Release: so.Release, RolledBack: so.RolledBack, Seconds: so.Seconds})
}

// notify sends a notice to every target that wants the event; a failure is a warning.
func (rn *run) notify(ctx context.Context, event string, s *config.Service, n notify.Notice) {
	n.Event, n.Project, n.Service, n.Source, n.Engine = event, rn.Project.Name, s.Name, rn.Source, rn.engine
	n.Time = time.Now().UTC().Format(time.RFC3339)
	n.Reason = rn.red.Redact(n.Reason)
	for i, l := range n.Migration {
		n.Migration[i] = rn.red.Redact(l)
	}
	for _, t := range rn.Project.Notifies {
		target := notify.Target{Kind: string(t.Kind), Name: t.Name, URL: t.URL, On: t.On}
		if !target.Wants(event) {
			continue
		}
		if err := notify.Send(context.WithoutCancel(ctx), target, n); err != nil {
			rn.warn(s.Name, "%s (the deploy goes on)", err)
		}
	}
}

// registries are the credentials the configuration's registry blocks give, by host.
func (rn *run) registries() map[string]RegistryAuth {
	out := map[string]RegistryAuth{}
	for host, r := range rn.Project.Registries {
		out[host] = RegistryAuth{Username: r.Username, Password: r.Password}
	}
	return out
}

// Event is one thing an operation reports: a step starting or ending, a line of output, a
// warning, progress, or the result. The CLI renders events; notices are built from them. Details
// never hold a sensitive value: the run redacts them before they leave.
type Event struct {
	FormatVersion string    `json:"format_version"`
	Time          time.Time `json:"time"`
	Type          EventType `json:"type"`
	Service       string    `json:"service,omitempty"`
	// Engine names the engine of a service on engine blocks ("default" for the project's own);
	// empty when the project has no engine blocks.
	Engine  string       `json:"engine,omitempty"`
	Step    string       `json:"step,omitempty"`    // a step's name (Step.Name)
	Phase   string       `json:"phase,omitempty"`   // start, end (steps)
	Outcome EventOutcome `json:"outcome,omitempty"` // step ends, results
	Detail  string       `json:"detail,omitempty"`
	Seconds float64      `json:"seconds,omitempty"` // step ends: how long it took
	// Progress events only.
	Bytes int64 `json:"bytes,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Result events only.
	Release    int  `json:"release,omitempty"`
	RolledBack bool `json:"rolled_back,omitempty"`
	// Migration events: what a migration's dry-run found; smoke events: the load's figures.
	Migration *MigrationReport  `json:"migration,omitempty"`
	Smoke     *probe.LoadResult `json:"smoke,omitempty"`
}

// EventType says what an event reports.
type EventType string

// Event types.
const (
	EventStep      EventType = "step"
	EventLog       EventType = "log"
	EventWarning   EventType = "warning"
	EventResult    EventType = "result"
	EventProgress  EventType = "progress"  // bytes moved by a long transfer (Bytes of Total, Total 0 when unknown)
	EventMigration EventType = "migration" // a migration's schema diff
	EventSmoke     EventType = "smoke"     // a smoke load's figures
)

// EventOutcome is how a step or a service ended.
type EventOutcome string

// Outcomes.
const (
	OutcomeOK      EventOutcome = "ok"
	OutcomeFailed  EventOutcome = "failed"
	OutcomeSkipped EventOutcome = "skipped"
)

// Step phases.
const (
	phaseStart = "start"
	phaseEnd   = "end"
)

func outcomeOf(err error) EventOutcome {
	if err != nil {
		return OutcomeFailed
	}
	return OutcomeOK
}
