package executor

import (
	"time"

	"github.com/deployer-dev/deployer/executor/probe"
)

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
