package hclspec

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"

	"github.com/deployer-dev/deployer/config"
)

// WriteDiagnostics renders diagnostics for a person: severity and summary, file:line:col, the
// source line with the offending range marked, then what to do.
func (r *Result) WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, color bool) {
	for _, d := range diags {
		r.writeDiagnostic(w, d, color)
	}
}

const (
	red    = "\x1b[1;31m"
	yellow = "\x1b[1;33m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

func (r *Result) writeDiagnostic(w io.Writer, d *hcl.Diagnostic, color bool) {
	paint := func(code, s string) string {
		if !color {
			return s
		}
		return code + s + reset
	}
	label, code := "Error", red
	if d.Severity == hcl.DiagWarning {
		label, code = "Warning", yellow
	}
	fmt.Fprintf(w, "%s %s\n", paint(code, label+":"), paint(bold, d.Summary))
	if d.Subject != nil {
		s := d.Subject
		fmt.Fprintf(w, "\n  --> %s:%d:%d\n", printable(s.Filename), s.Start.Line, s.Start.Column)
		if line, marker, ok := r.sourceLine(*s); ok {
			num := fmt.Sprintf("%d", s.Start.Line)
			pad := strings.Repeat(" ", len(num))
			fmt.Fprintf(w, "  %s |\n  %s | %s\n  %s | %s\n", pad, num, line, pad, paint(code, marker))
		}
	}
	if d.Detail != "" {
		fmt.Fprintln(w)
		for _, line := range strings.Split(d.Detail, "\n") {
			fmt.Fprintln(w, strings.TrimRight("  "+printable(line), " "))
		}
	}
	fmt.Fprintln(w)
}

// sourceLine returns the first line of the range with tabs expanded, and a marker of ^ under the
// range (to the end of the line when the range spans more).
func (r *Result) sourceLine(rng hcl.Range) (string, string, bool) {
	var f *hcl.File
	if r != nil && r.files != nil && !r.hidden[rng.Filename] {
		f = r.files[rng.Filename]
	}
	if f == nil || rng.Start.Byte > len(f.Bytes) || rng.Start.Byte < 0 {
		return "", "", false
	}
	src := f.Bytes
	start := bytes.LastIndexByte(src[:rng.Start.Byte], '\n') + 1
	end := bytes.IndexByte(src[rng.Start.Byte:], '\n')
	if end < 0 {
		end = len(src)
	} else {
		end += rng.Start.Byte
	}
	stop := rng.End.Byte
	if stop > end || stop < rng.Start.Byte {
		stop = end
	}
	line := []rune(printable(strings.TrimRight(expandTabs(string(src[start:end])), "\r")))
	col := utf8.RuneCountInString(expandTabs(string(src[start:rng.Start.Byte])))
	width := utf8.RuneCountInString(expandTabs(string(src[rng.Start.Byte:stop])))
	if width < 1 {
		width = 1
	}
	// A long line is shown as a window around the range.
	const before, after = 40, 80
	if len(line) > before+after {
		from := max(0, col-before)
		to := min(len(line), col+after)
		prefix, suffix := "", ""
		if from > 0 {
			prefix = "…"
		}
		if to < len(line) {
			suffix = "…"
		}
		line = []rune(prefix + string(line[from:to]) + suffix)
		col = col - from + len([]rune(prefix))
		width = max(1, min(width, len(line)-col))
	}
	return string(line), strings.Repeat(" ", col) + strings.Repeat("^", width), true
}

// printable replaces what a terminal would act on (a configuration from a pull request may hold
// escape sequences) with U+FFFD.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return '\uFFFD'
		}
		return r
	}, s)
}

func expandTabs(s string) string {
	return strings.ReplaceAll(s, "\t", "    ")
}

// DiagnosticsText renders diagnostics without color; tests and JSON output use it.
func (r *Result) DiagnosticsText(diags hcl.Diagnostics) string {
	var b strings.Builder
	r.WriteDiagnostics(&b, diags, false)
	return b.String()
}

// sanitize makes diagnostics safe to show and true. When something that depends on a secret's
// value failed (failSecret), that is the one error shown: any other would tell where loading
// stopped. Else an error about an expression whose value is unknown (validate without a
// variable's value) is dropped: the check needs the value. An error about an expression whose
// value is sensitive keeps its summary, its place and nothing of its detail, which may quote the
// value; and every secret met while loading is masked in what is left, whatever put it there.
func (l *loader) sanitize(diags hcl.Diagnostics, p *config.Project) hcl.Diagnostics {
	if l.secretFailed {
		return hcl.Diagnostics{l.secretFailure()}
	}
	secrets := append([]string{}, l.secrets...)
	for _, v := range l.vars {
		if v.sensitive {
			secrets = appendSecrets(secrets, v.value, true)
		}
	}
	if p != nil {
		secrets = append(secrets, p.Secrets...)
	}
	secrets = slices.DeleteFunc(secrets, func(s string) bool { return len(s) < minSecret })
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	mask := func(s string) string {
		for _, x := range secrets {
			s = strings.ReplaceAll(s, x, "(sensitive)")
		}
		return s
	}
	var out hcl.Diagnostics
	for _, d := range diags {
		_, safe := d.Extra.(safeDetail)
		if !safe && d.Severity == hcl.DiagError && d.Subject != nil && within(*d.Subject, l.unknownRanges) {
			continue
		}
		if !safe && d.Subject != nil && within(*d.Subject, l.sensitiveRanges) {
			d.Detail = "The value here is computed from a sensitive value" + sensitiveSources + ", so it is not shown, nor what is wrong with it in detail. Check the values it is computed from."
		}
		d.Summary, d.Detail = mask(d.Summary), mask(d.Detail)
		out = append(out, d)
	}
	return out
}

// within reports whether a range starts inside one of ranges.
func within(subject hcl.Range, ranges []hcl.Range) bool {
	for _, r := range ranges {
		if r.Filename == subject.Filename && r.Start.Byte <= subject.Start.Byte && subject.Start.Byte < max(r.End.Byte, r.Start.Byte+1) {
			return true
		}
	}
	return false
}
