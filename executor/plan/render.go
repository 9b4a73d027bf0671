package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// RenderOptions control the text form of a plan.
type RenderOptions struct {
	Color bool
	// Engine, when set, names the engine of a fleet's plan: services are service.NAME[ENGINE].
	Engine string
}

// address is how a service is named in output: service.NAME, with its engine in a fleet.
func (o RenderOptions) address(service string) string {
	if o.Engine != "" {
		return "service." + service + "[" + o.Engine + "]"
	}
	return "service." + service
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
	if o.Engine != "" {
		ew.printf("Engine %s: project %q on %s\n", o.Engine, p.Project, p.Engine)
	} else {
		ew.printf("Project %q on %s\n", p.Project, p.Engine)
	}
	if len(p.Leftovers) > 0 {
		ew.printf("\nLeft over from an earlier apply:\n")
		for _, l := range p.Leftovers {
			who := ""
			if l.Service != "" {
				who = o.address(l.Service) + ": "
			}
			ew.printf("  ! %s%s\n", who, l.Detail)
		}
	}
	writeIgnored(ew, p.Ignored)
	if !p.HasChanges() {
		ew.printf("\nNo changes. What runs matches the configuration.\n")
		if len(p.Steps) > 0 {
			p.writeSteps(ew, o)
		}
		return ew.err
	}
	ew.printf("\nChanges:\n")
	for _, c := range p.Changes {
		if c.Action == ActionNone {
			continue
		}
		ew.printf("\n  %s %s %s\n", paint(colors[c.Action], fmt.Sprintf("%-3s", c.Action.Symbol())), o.address(c.Service), describe(c))
		if t := c.Takeover; t != nil && c.Action == ActionTakeover {
			ew.printf("        made by    %s\n        image      %s (%s)\n", t.Made, t.Image, Short(t.ImageID))
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
	p.writeSteps(ew, o)
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

// writeIgnored lists the containers labelled for the project that are none of its own.
func writeIgnored(ew *errWriter, list []Ignored) {
	if len(list) == 0 {
		return
	}
	ew.printf("\nLabelled for this project, but none of its own (left as they are: never removed, started or routed to):\n")
	for _, ig := range list {
		ew.printf("  ? ignored: %s\n", ig.Reason)
	}
}

// WriteIgnored lists, for status, the containers labelled for the project that are none of its
// own.
func WriteIgnored(w io.Writer, list []Ignored) error {
	ew := &errWriter{w: w}
	writeIgnored(ew, list)
	return ew.err
}

func (p *Plan) writeSteps(ew *errWriter, o RenderOptions) {
	ew.printf("\nSteps apply will run:\n")
	for i, s := range p.Steps {
		name := s.Name
		if s.Service != "" {
			name = s.Service + ": " + s.Name
			if o.Engine != "" {
				name = s.Service + "[" + o.Engine + "]: " + s.Name
			}
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
		if c.Unverified {
			what = "will be health-checked"
		}
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

// WriteText renders a fleet's plan: each engine's plan (or why it could not be read), the
// rollouts with their batches, and the services whose engines are out of step; the implicit
// engine alone's as a single engine's plan.
func (fp *FleetPlan) WriteText(w io.Writer, o RenderOptions) error {
	if pl := fp.Single(); pl != nil {
		return pl.WriteText(w, o)
	}
	ew := &errWriter{w: w}
	for i, ep := range fp.Engines {
		if i > 0 {
			ew.printf("\n")
		}
		if ep.Error != "" {
			ew.printf("Engine %s: cannot be read: %s\n", ep.Engine, ep.Error)
			continue
		}
		if ep.Plan == nil {
			ew.printf("Engine %s: nothing targeted runs here\n", ep.Engine)
			continue
		}
		eo := o
		eo.Engine = ep.Engine
		if err := ep.Plan.WriteText(w, eo); err != nil {
			return err
		}
	}
	if len(fp.Rollouts) > 0 {
		ew.printf("\nRollouts (all or nothing: no engine switches before every candidate passed; a failure sends every switched engine back):\n")
		for _, r := range fp.Rollouts {
			var batches []string
			for _, b := range r.Batches {
				batches = append(batches, "["+strings.Join(b, ", ")+"]")
			}
			ew.printf("  service.%s release %d: %s", r.Service, r.Release, strings.Join(batches, " then "))
			if r.Wait != "" {
				ew.printf(", each batch watched for %s", r.Wait)
			}
			if r.ImageFrom != "" {
				ew.printf("; the image of engine %s, sent to the engines that lack it", r.ImageFrom)
			}
			ew.printf("\n")
		}
	}
	for _, n := range fp.OutOfStep {
		ew.printf("\n! %s\n", n)
	}
	for _, n := range fp.Undeclared {
		ew.printf("\n! %s\n", n)
	}
	if bad := fp.Unreachable(); len(bad) > 0 {
		ew.printf("\n%s cannot be read: apply would change nothing until every engine answers.\n", Plural(len(bad), "engine"))
	}
	return ew.err
}

// WriteJSON writes the fleet's plan as one JSON object (Shown).
func (fp *FleetPlan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(fp.Shown())
}
