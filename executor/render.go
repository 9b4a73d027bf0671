package executor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// RenderOptions control the text form of a plan.
type RenderOptions struct {
	Color bool
}

// WriteText renders a plan for a person: each change with its symbol and the attributes that
// differ, the steps apply will run, and the summary line.
func (p *Plan) WriteText(w io.Writer, o RenderOptions) error {
	paint := func(code, s string) string {
		if !o.Color || code == "" {
			return s
		}
		return "\x1b[" + code + "m" + s + "\x1b[0m"
	}
	colors := map[Action]string{ActionCreate: "32", ActionReplace: "33", ActionTakeover: "33", ActionUpdate: "33", ActionDelete: "31"}
	ew := &errWriter{w: w}
	ew.printf("Project %q on %s\n", p.Project, p.Engine)
	if len(p.Leftovers) > 0 {
		ew.printf("\nLeft over from an earlier apply:\n")
		for _, l := range p.Leftovers {
			who := ""
			if l.Service != "" {
				who = "service." + l.Service + ": "
			}
			ew.printf("  ! %s%s\n", who, l.Detail)
		}
	}
	if !p.HasChanges() {
		ew.printf("\nNo changes. What runs matches the configuration.\n")
		if len(p.Steps) > 0 {
			p.writeSteps(ew)
		}
		return ew.err
	}
	ew.printf("\nChanges:\n")
	for _, c := range p.Changes {
		if c.Action == ActionNone {
			continue
		}
		ew.printf("\n  %s service.%s %s\n", paint(colors[c.Action], fmt.Sprintf("%-3s", c.Action.Symbol())), c.Service, describe(c))
		if t := c.Takeover; t != nil && c.Action == ActionTakeover {
			ew.printf("        made by    %s\n        image      %s (%s)\n", t.Made, t.Image, short(t.ImageID))
			if len(t.Ports) > 0 {
				ew.printf("        ports      %s\n", strings.Join(t.Ports, ", "))
			}
			if len(t.Volumes) > 0 {
				ew.printf("        volumes    %s\n", strings.Join(t.Volumes, ", "))
			}
		}
		width := 0
		for _, a := range c.Attributes {
			width = max(width, len(a.Path))
		}
		for _, a := range c.Attributes {
			ew.printf("        %-*s  %s\n", width, a.Path, attrText(a, c.Action))
		}
	}
	p.writeSteps(ew)
	ew.printf("\nPlan: %d to create, %d to replace, %d to delete", p.Summary.Create, p.Summary.Replace, p.Summary.Delete)
	if p.Summary.Update > 0 {
		ew.printf(", %d to start", p.Summary.Update)
	}
	if p.Summary.TakeOver > 0 {
		ew.printf(", %d to take over", p.Summary.TakeOver)
	}
	ew.printf(".\n")
	return ew.err
}

func (p *Plan) writeSteps(ew *errWriter) {
	ew.printf("\nSteps apply will run:\n")
	for i, s := range p.Steps {
		name := s.Name
		if s.Service != "" {
			name = s.Service + ": " + s.Name
		}
		ew.printf("  %2d. %-28s %s\n", i+1, name, s.Detail)
	}
}

func describe(c *Change) string {
	var what string
	switch c.Action {
	case ActionCreate:
		what = fmt.Sprintf("will be created (release %d)", c.NextRelease)
	case ActionReplace:
		what = fmt.Sprintf("will be replaced blue-green (release %d -> %d)", c.LiveRelease, c.NextRelease)
	case ActionTakeover:
		what = fmt.Sprintf("will be taken over (container %s -> release %d)", c.Takeover.Name, c.NextRelease)
	case ActionUpdate:
		what = "will be started"
	case ActionDelete:
		what = "will be removed (volumes are kept)"
	}
	if len(c.Reasons) > 0 && c.Action != ActionCreate {
		what += ": " + strings.Join(c.Reasons, "; ")
	}
	return what
}

func attrText(a AttrChange, action Action) string {
	def := ""
	if a.Default {
		def = "  (default)"
	}
	switch {
	case action == ActionCreate:
		return quote(a.New, a.Sensitive) + def
	case !a.HasOld:
		return "(unset) -> " + quote(a.New, a.Sensitive) + def
	case !a.HasNew:
		return quote(a.Old, a.Sensitive) + " -> (removed)"
	}
	return quote(a.Old, a.Sensitive) + " -> " + quote(a.New, a.Sensitive) + def
}

// quote shows a value: attribute values are JSON literals already.
func quote(v json.RawMessage, sensitive bool) string {
	if sensitive {
		return "(sensitive)"
	}
	return string(v)
}

// WriteJSON renders the plan as one JSON object.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
