package executor

import (
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/deployer-dev/deployer/config"
)

// Redactor replaces every sensitive value of a project with "(sensitive)" in text that leaves
// the deployer: plans, event details, errors, notices, status.
type Redactor struct{ values []string }

// NewRedactor collects the project's sensitive values (variables declared sensitive and every
// string computed from them), longest first, so that a value containing another is masked whole.
func NewRedactor(p *config.Project) *Redactor {
	r := &Redactor{}
	if p == nil {
		return r
	}
	seen := map[string]bool{}
	add := func(v string) {
		// Shorter sensitive values are refused when the configuration is loaded
		// (config.MinSecret): none reaches here to be shown unmasked.
		if utf8.RuneCountInString(v) >= config.MinSecret && !seen[v] {
			seen[v] = true
			r.values = append(r.values, v)
		}
	}
	for _, v := range p.Secrets {
		add(v)
	}
	for _, st := range p.Stores {
		add(st.SigningKey)
	}
	sort.SliceStable(r.values, func(i, j int) bool { return len(r.values[i]) > len(r.values[j]) })
	return r
}

// Redact masks every sensitive value in s.
func (r *Redactor) Redact(s string) string {
	if r == nil {
		return s
	}
	for _, v := range r.values {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, "(sensitive)")
		}
	}
	return s
}

// words masks the sensitive arguments of a command, for showing it.
func (r *Redactor) words(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = r.Redact(a)
	}
	return shellWords(out)
}
