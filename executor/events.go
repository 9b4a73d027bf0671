package executor

import (
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
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

// redactor replaces every sensitive value of a project with "(sensitive)" in text that leaves
// the deployer: event details, errors, notices.
type redactor struct{ values []string }

func newRedactor(p *config.Project) *redactor {
	r := &redactor{}
	if p == nil {
		return r
	}
	for _, s := range p.Services {
		attrs := s.Attributes()
		for k := range attrs {
			if p.IsSensitive(s.Name, k) {
				r.add(rawValue(s, k))
			}
		}
	}
	for _, n := range p.Notifies {
		r.add(n.URL)
	}
	for _, st := range p.Stores {
		r.add(st.SigningKey)
	}
	return r
}

// rawValue is the unencoded value of a string attribute (env and build args are the ones that
// carry secrets in practice).
func rawValue(s *config.Service, key string) string {
	switch {
	case strings.HasPrefix(key, "env."):
		return s.Env[strings.TrimPrefix(key, "env.")]
	case strings.HasPrefix(key, "build.args.") && s.Build != nil:
		return s.Build.Args[strings.TrimPrefix(key, "build.args.")]
	case key == "image":
		return s.Image
	}
	return ""
}

func (r *redactor) add(v string) {
	// Very short values would redact ordinary words; they are not secrets worth the name.
	if len(v) >= 4 {
		r.values = append(r.values, v)
	}
}

func (r *redactor) redact(s string) string {
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, "(sensitive)")
	}
	return s
}
