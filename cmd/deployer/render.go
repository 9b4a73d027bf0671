package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

// renderer shows apply's events: on a terminal the running step with its elapsed seconds,
// rewritten in place; without one (CI) one line per finished step with its duration; with -json
// one JSON object per event per line. Steps and results go to stdout, warnings and errors to
// stderr.
type renderer struct {
	g            *globals
	w, ew        io.Writer // stdout, stderr
	json         bool
	tty          bool
	mu           sync.Mutex
	cur          *executor.Event
	start        time.Time
	stop         chan struct{}
	done         sync.WaitGroup
	rates        map[string]time.Time // when each transfer started
	lastProgress time.Time            // when a progress line was last printed without a terminal
	red          *plan.Redactor       // masks sensitive values in closing lines (events come masked)
}

func newRenderer(g *globals, asJSON bool) *renderer {
	r := &renderer{g: g, w: g.stdout, ew: g.stderr, json: asJSON, tty: g.color(g.stdout) && !asJSON, stop: make(chan struct{}), red: g.red}
	if r.tty {
		r.done.Add(1)
		go r.tick()
	}
	return r
}

func (r *renderer) tick() {
	defer r.done.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			if r.cur != nil {
				fmt.Fprintf(r.w, "\r\x1b[K  ... %s %.0fs", stepName(*r.cur), time.Since(r.start).Seconds())
			}
			r.mu.Unlock()
		}
	}
}

func (r *renderer) close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
		r.done.Wait()
	}
}

func stepName(e executor.Event) string {
	switch {
	case e.Service != "" && e.Engine != "":
		return e.Service + "[" + e.Engine + "]: " + e.Step
	case e.Service != "":
		return e.Service + ": " + e.Step
	case e.Engine != "":
		return "[" + e.Engine + "] " + e.Step
	}
	return e.Step
}

func (r *renderer) event(e executor.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.g.signal() != 0 && e.Outcome == executor.OutcomeFailed && strings.Contains(e.Detail, context.Canceled.Error()) {
		// The step was cut short by the interruption: what the engine call that was cut was
		// ("inspect container ...: Get http://...") says nothing to the user.
		e.Detail = "interrupted"
	}
	e.Detail = r.g.say(e.Detail)
	if r.json {
		b, _ := json.Marshal(e)
		fmt.Fprintf(r.w, "%s\n", b)
		return
	}
	e.Detail = terminalSafe(e.Detail)
	clear := ""
	if r.tty && r.cur != nil {
		clear = "\r\x1b[K"
	}
	switch e.Type {
	case executor.EventStep:
		if e.Phase == "start" {
			if r.tty {
				cur := e
				r.cur, r.start = &cur, time.Now()
				fmt.Fprintf(r.w, "%s  ... %s", clear, stepName(e))
			}
			return
		}
		r.cur = nil
		mark := map[executor.EventOutcome]string{executor.OutcomeOK: "ok", executor.OutcomeFailed: "FAILED", executor.OutcomeSkipped: "skipped"}[e.Outcome]
		line := fmt.Sprintf("  %-7s %-28s %5.1fs", mark, stepName(e), e.Seconds)
		if e.Detail != "" && e.Outcome != executor.OutcomeOK {
			line += "  " + strings.ReplaceAll(e.Detail, "\n", "\n          ")
		}
		fmt.Fprintf(r.w, "%s%s\n", clear, line)
	case executor.EventProgress:
		r.progress(e, clear)
	case executor.EventLog:
		fmt.Fprintf(r.w, "%s          | %s\n", clear, e.Detail)
		r.redraw()
	case executor.EventWarning:
		fmt.Fprint(r.w, clear)
		fmt.Fprintf(r.ew, "  Warning: %s\n", e.Detail)
		r.redraw()
	case executor.EventMigration, executor.EventSmoke:
		fmt.Fprintf(r.w, "%s          | %s\n", clear, e.Detail) // the summary; the figures are in -json
		r.redraw()
	}
}

// progress shows a transfer: bytes, of the total the volume is expected to hold, the rate and
// the time left; on a terminal in place of the step line with a bar, without one a line every
// few seconds and when a volume is done.
func (r *renderer) progress(e executor.Event, clear string) {
	key := e.Service + "/" + e.Detail
	if r.rates == nil {
		r.rates = map[string]time.Time{}
	}
	start, ok := r.rates[key]
	if !ok {
		start = time.Now()
		r.rates[key] = start
	}
	done := strings.HasSuffix(e.Detail, " done")
	line := progressLine(e, time.Since(start), done)
	if !r.tty {
		if done || time.Since(r.lastProgress) >= 5*time.Second {
			r.lastProgress = time.Now()
			fmt.Fprintf(r.w, "          | %s: %s\n", strings.TrimSuffix(e.Detail, " done"), line)
		}
		return
	}
	bar := ""
	if e.Total > 0 {
		const width = 24
		n := int(float64(width) * float64(e.Bytes) / float64(e.Total))
		n = min(max(n, 0), width)
		bar = " [" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
	}
	fmt.Fprintf(r.w, "%s  ... %s: %s %s%s", clear, e.Service, e.Detail, line, bar)
	if done {
		fmt.Fprintln(r.w)
		r.redraw()
	}
}

// progressLine says how far a transfer is: "120 MiB of 400 MiB, 35 MiB/s, 8s left".
func progressLine(e executor.Event, elapsed time.Duration, done bool) string {
	line := executor.HumanBytes(e.Bytes)
	if e.Total > 0 && !done {
		line += " of " + executor.HumanBytes(max(e.Total, e.Bytes))
	}
	secs := elapsed.Seconds()
	if secs <= 0.05 || e.Bytes <= 0 {
		return line
	}
	rate := float64(e.Bytes) / secs
	line += fmt.Sprintf(", %s/s", executor.HumanBytes(int64(rate)))
	if e.Total > e.Bytes && !done {
		left := time.Duration(float64(e.Total-e.Bytes) / rate * float64(time.Second))
		line += ", " + left.Round(time.Second).String() + " left"
	}
	return line
}

// redraw shows the running step again after a line was printed above it.
func (r *renderer) redraw() {
	if r.tty && r.cur != nil {
		fmt.Fprintf(r.w, "  ... %s %.0fs", stepName(*r.cur), time.Since(r.start).Seconds())
	}
}

// final prints a closing line of results on stdout (never in JSON mode, where the result
// events say it).
func (r *renderer) final(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.json {
		fmt.Fprintln(r.w, terminalSafe(r.g.say(r.red.Redact(line))))
	}
}

// problem prints a closing line about a failure on stderr (never in JSON mode, where the result
// events say it).
func (r *renderer) problem(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.json {
		fmt.Fprintln(r.ew, terminalSafe(r.g.say(r.red.Redact(line))))
	}
}

// fail says an error on stderr: text, or with -json a diagnostic.
func (r *renderer) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.g.fail(err)
}

// warn says a warning on stderr: text, or with -json a diagnostic.
func (r *renderer) warn(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.g.problem("warning", r.red.Redact(msg))
}

// live is the last line of a failed or interrupted operation: what is live now. With -json it
// is an object of type "live" on stdout, after the events.
func (r *renderer) live(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line = r.red.Redact(line)
	if r.json {
		b, _ := json.Marshal(map[string]string{"format_version": plan.FormatVersion, "type": "live", "detail": line})
		fmt.Fprintf(r.w, "%s\n", b)
		return
	}
	fmt.Fprintln(r.ew, terminalSafe(line))
}

// terminalSafe escapes what a terminal would act on (escape sequences, carriage returns,
// bidirectional overrides) in text that may come from outside: a backup store, an app's
// output, an error message. Line breaks stay.
func terminalSafe(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = backup.Printable(l)
	}
	return strings.Join(lines, "\n")
}
