package executor

import (
	"fmt"
	"strings"
	"time"
)

// pruneText names the releases a clean-up removes, and which images go with them.
func pruneText(list []Pruned) string {
	var parts []string
	for _, p := range list {
		what := fmt.Sprintf("release %d (%s)", p.Release, p.Container)
		if p.RemoveImage {
			what += fmt.Sprintf(" with its image %s (%s)", p.Image, short(p.ImageID))
		} else {
			what += fmt.Sprintf(", keeping its image %s (%s): %s", p.Image, short(p.ImageID), p.KeptBecause)
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

func dur(d time.Duration) string { return d.String() }

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

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// ShortID is the first 12 hex digits of an image or container ID, as docker shows them.
func ShortID(id string) string { return short(id) }

func short(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
