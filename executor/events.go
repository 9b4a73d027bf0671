package executor

import (
	"time"
)

// Event is one thing apply reports: a step starting or ending, a line of output, a warning, or
// the result. The CLI renders events; notices are built from them. Details never hold a
// sensitive value: the applier redacts them before they leave.
type Event struct {
	FormatVersion string    `json:"format_version"`
	Time          time.Time `json:"time"`
	Type          string    `json:"type"` // step, log, warning, result
	Service       string    `json:"service,omitempty"`
	Step          string    `json:"step,omitempty"`
	Phase         string    `json:"phase,omitempty"`   // start, end (steps)
	Outcome       string    `json:"outcome,omitempty"` // ok, failed, skipped (step ends, results)
	Detail        string    `json:"detail,omitempty"`
	Seconds       float64   `json:"seconds,omitempty"` // step ends: how long it took
	// Progress events only.
	Bytes int64 `json:"bytes,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Result events only.
	Release    int  `json:"release,omitempty"`
	RolledBack bool `json:"rolled_back,omitempty"`
}

// Event types and outcomes.
const (
	EventStep    = "step"
	EventLog     = "log"
	EventWarning = "warning"
	EventResult  = "result"

	OutcomeOK      = "ok"
	OutcomeFailed  = "failed"
	OutcomeSkipped = "skipped"
)
