// Package notify sends deploy notices: Slack incoming-webhook messages and generic JSON webhooks.
// A notice that cannot be sent is the caller's warning, never a failed deploy, so Send returns an
// error and does nothing else about it.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Notice is one event worth telling people about.
type Notice struct {
	Event       string  `json:"event"` // started, succeeded, failed, rolled_back
	Project     string  `json:"project"`
	Service     string  `json:"service,omitempty"`
	Engine      string  `json:"engine,omitempty"`       // the engine, for a configuration with engine blocks
	Release     int     `json:"release,omitempty"`      // the release being deployed
	LiveRelease int     `json:"live_release,omitempty"` // the release serving after the event
	Image       string  `json:"image,omitempty"`
	Duration    float64 `json:"duration_seconds,omitempty"`
	Reason      string  `json:"reason,omitempty"`
	// Migration is the schema diff of the release's migration, one change a line; Smoke the
	// smoke load's figures.
	Migration []string `json:"migration,omitempty"`
	Smoke     string   `json:"smoke,omitempty"`
	Source    string   `json:"source,omitempty"`
	Time      string   `json:"time"`
}

// Target is one configured notify block.
type Target struct {
	Kind string // slack or webhook
	Name string
	URL  string
	On   []string
}

// Timeout bounds one send, so a slow endpoint never holds a deploy.
const Timeout = 5 * time.Second

var client = &http.Client{Timeout: Timeout}

// Wants reports whether the target is sent this event.
func (t Target) Wants(event string) bool {
	if t.URL == "" {
		return false
	}
	for _, e := range t.On {
		if e == event {
			return true
		}
	}
	return false
}

// Send posts the notice to the target.
func Send(ctx context.Context, t Target, n Notice) error {
	var body any = n
	if t.Kind == "slack" {
		body = map[string]string{"text": SlackText(n)}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	where := fmt.Sprintf("notify %s %q (%s)", t.Kind, t.Name, SafeURL(t.URL))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: the url does not parse", where)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "deployer")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %v", where, withoutURL(err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: the endpoint answered %s", where, resp.Status)
	}
	return nil
}

// SafeURL names an endpoint without what makes it a credential: webhook URLs carry tokens in
// their user info, path and query, so only the scheme and host are shown.
func SafeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(an unparsable url)"
	}
	return u.Scheme + "://" + u.Host + "/..."
}

// withoutURL is the cause of an HTTP client error, without the URL the client puts in it.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// SlackText is the one-line message for Slack.
func SlackText(n Notice) string {
	icon := map[string]string{"started": ":rocket:", "succeeded": ":white_check_mark:", "failed": ":x:", "rolled_back": ":leftwards_arrow_with_hook:"}[n.Event]
	what := fmt.Sprintf("%s *%s* service.%s", icon, n.Project, n.Service)
	if n.Engine != "" {
		what += "[" + n.Engine + "]"
	}
	switch n.Event {
	case "started":
		what += fmt.Sprintf(": deploying release %d", n.Release)
	case "succeeded":
		what += fmt.Sprintf(": release %d live", n.LiveRelease)
	case "failed":
		what += fmt.Sprintf(": release %d failed", n.Release)
	case "rolled_back":
		what += fmt.Sprintf(": release %d failed, rolled back to release %d", n.Release, n.LiveRelease)
	}
	if n.Image != "" {
		what += " (" + n.Image + ")"
	}
	if n.Duration > 0 {
		what += fmt.Sprintf(" in %.1fs", n.Duration)
	}
	if n.Reason != "" {
		what += "\n> " + n.Reason
	}
	if len(n.Migration) > 0 {
		what += "\nmigration: " + strings.Join(n.Migration, "; ")
	}
	if n.Smoke != "" {
		what += "\nsmoke: " + n.Smoke
	}
	if n.Source != "" {
		what += "\nsource: " + n.Source
	}
	return what
}
