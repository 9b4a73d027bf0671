package plan

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// pruneText names the releases a clean-up removes, and which images go with them.
func pruneText(list []Pruned) string {
	var parts []string
	for _, p := range list {
		what := fmt.Sprintf("release %d (%s)", p.Release, p.Container)
		if p.RemoveImage {
			what += fmt.Sprintf(" with its image %s (%s)", p.Image, Short(p.ImageID))
		} else {
			what += fmt.Sprintf(", keeping its image %s (%s): %s", p.Image, Short(p.ImageID), p.KeptBecause)
		}
		parts = append(parts, what)
	}
	if len(parts) == 0 {
		return ""
	}
	return "; remove " + strings.Join(parts, "; remove ")
}

func statusText(codes []int) string {
	if len(codes) == 0 {
		return "2xx"
	}
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprint(c))
	}
	return strings.Join(parts, " or ")
}

func Dur(d time.Duration) string { return d.String() }

// shellWords shows a command the way a shell would need it typed.
func shellWords(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

func OrUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// ShortID is the first 12 hex digits of an image or container ID, as docker shows them.
func ShortID(id string) string { return Short(id) }

func Short(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

func Plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// smokeText is what the plan says of a smoke load.
func smokeText(sm *config.Smoke) string {
	what := Plural(sm.Requests, "request")
	switch {
	case sm.Duration > 0 && sm.Requests > 0:
		what += " or " + Dur(sm.Duration) + ", whichever ends first"
	case sm.Duration > 0:
		what = "requests for " + Dur(sm.Duration)
	}
	return fmt.Sprintf("smoke: %s, %d at once, to %s; at most %s failed, p95 under %s", what, sm.Concurrency, strings.Join(sm.Paths, ", "),
		strconv.FormatFloat(100*sm.MaxErrorRate, 'f', -1, 64)+"%", Dur(sm.P95))
}

// DescribeLock says who holds a project's deploy lock, and since when.
func DescribeLock(c *engine.Container) string {
	return fmt.Sprintf("%s since %s", OrUnknown(c.Labels[engine.LabelHolder]), OrUnknown(c.Labels[engine.LabelCreatedAt]))
}
