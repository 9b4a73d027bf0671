package plan

import (
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/deployer-dev/deployer/config"
)

// Redactor keeps sensitive values out of text that leaves the deployer: plans, event details,
// errors, notices, status.
//
// The deployer's own text is masked only for the secrets themselves (config.Project.Secrets: a
// sensitive variable's value, what env() read): a configuration chooses what a value computed
// from a secret is ("candidate" if the secret starts with an a), and masking that text wherever
// it appears would tell which words it is. Values computed from secrets are shown as
// (sensitive) from where they are (the plan's attributes by their path, a command's words by
// their position: Command). Text that comes from outside the deployer (an app's or a command's
// output, an engine's error) may quote any of them, and is masked for both (Output).
type Redactor struct {
	p       *config.Project
	secrets []string // the secrets, longest first
	all     []string // the secrets and the values computed from them, longest first
}

// NewRedactor collects the project's secrets and the values computed from them.
func NewRedactor(p *config.Project) *Redactor {
	r := &Redactor{p: p}
	if p == nil {
		return r
	}
	r.secrets = longestFirst(p.Secrets)
	r.all = longestFirst(append(append([]string{}, p.Secrets...), p.Derived...))
	return r
}

// longestFirst keeps the values long enough to mask, longest first, so that a value holding
// another is masked whole. Shorter sensitive values are refused when the configuration is
// loaded (config.MinSecret), or shown only by where they are.
func longestFirst(values []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range values {
		if utf8.RuneCountInString(v) >= config.MinSecret && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Redact masks every secret in s, the deployer's own text.
func (r *Redactor) Redact(s string) string {
	if r == nil {
		return s
	}
	return maskAll(s, r.secrets)
}

// Output masks every secret, and every value computed from one, in s: text from outside the
// deployer (an app's or a command's output, an engine's error).
func (r *Redactor) Output(s string) string {
	if r == nil {
		return s
	}
	return maskAll(s, r.all)
}

func maskAll(s string, values []string) string {
	for _, v := range values {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, "(sensitive)")
		}
	}
	return s
}

// Command shows a service's command attribute (command, build.before, a hook's or a migration's
// command, seed_if_empty: config.Attr*): each word computed from a secret as (sensitive), by its
// position, and the secrets masked in the others.
func (r *Redactor) Command(service, attr string, argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if r != nil && r.p != nil && r.p.IsSensitiveElem(service, attr, i) {
			out[i] = "(sensitive)"
			continue
		}
		out[i] = shellWords([]string{r.Redact(a)})
	}
	return strings.Join(out, " ")
}
