// Package probe checks a release over HTTP: health checks until enough consecutive passes or a
// deadline, and one-shot canaries, reporting the last status, body or error when they fail.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Check is one HTTP GET and what counts as passing.
type Check struct {
	URL          string
	Status       []int // empty: any 2xx
	BodyContains string
	Timeout      time.Duration
}

// Result is the outcome of one attempt.
type Result struct {
	Status int
	Body   string // at most the first 512 bytes
	Err    error
}

// OK reports whether the attempt passed the check.
func (c Check) OK(r Result) bool {
	if r.Err != nil {
		return false
	}
	if len(c.Status) == 0 {
		if r.Status < 200 || r.Status > 299 {
			return false
		}
	} else if !contains(c.Status, r.Status) {
		return false
	}
	return c.BodyContains == "" || strings.Contains(r.Body, c.BodyContains)
}

func contains(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

// Describe says what an attempt got, for error messages.
func (c Check) Describe(r Result) string {
	if r.Err != nil {
		return r.Err.Error()
	}
	s := fmt.Sprintf("status %d", r.Status)
	if c.BodyContains != "" && !strings.Contains(r.Body, c.BodyContains) && c.OK(Result{Status: r.Status, Body: c.BodyContains}) {
		s = fmt.Sprintf("body does not contain %q", c.BodyContains)
	}
	if body := strings.TrimSpace(r.Body); body != "" {
		if len(body) > 200 {
			body = body[:200] + "..."
		}
		s += fmt.Sprintf(" (body: %q)", body)
	}
	return s
}

// client never reuses connections between attempts, so each check sees the server as a new
// client would, and never follows redirects (a redirect is an answer).
var client = &http.Client{
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Get runs one attempt.
func Get(parent context.Context, c Check) Result {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return Result{Err: err}
	}
	req.Header.Set("User-Agent", "deployer-probe")
	resp, err := client.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return Result{Err: parent.Err()}
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Result{Err: fmt.Errorf("no answer within %s", timeout)}
		}
		return Result{Err: simplify(err)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return Result{Status: resp.StatusCode, Body: string(b)}
}

// simplify drops Go's "Get "url": " prefix, which the caller's message already names.
func simplify(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && ue.Unwrap() != nil {
		return ue.Unwrap()
	}
	return err
}

// Until repeats the check every interval until it passes healthy times in a row, or fails once
// the deadline passes. alive is called before each attempt; an error from it (the container
// exited) ends the wait at once.
func Until(ctx context.Context, c Check, interval time.Duration, healthy int, deadline time.Duration, alive func() error) error {
	return UntilWith(ctx, Get, c, interval, healthy, deadline, alive)
}

// UntilWith is Until with another way to make one attempt (through the proxy, for instance).
func UntilWith(ctx context.Context, get func(context.Context, Check) Result, c Check, interval time.Duration, healthy int, deadline time.Duration, alive func() error) error {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	passes := 0
	var last Result
	attempts := 0
	for {
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		r := get(ctx, c)
		if ctx.Err() != nil && attempts > 0 && !c.OK(r) {
			// The overall deadline cut this attempt short: what the service last answered
			// in full says more than "no answer".
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("not healthy within %s after %d attempts (last: %s)", deadline, attempts, c.Describe(last))
			}
			return ctx.Err()
		}
		last = r
		attempts++
		if c.OK(last) {
			passes++
			if passes >= healthy {
				return nil
			}
		} else {
			passes = 0
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("not healthy within %s after %d attempts (last: %s)", deadline, attempts, c.Describe(last))
			}
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
