package plan

import (
	"fmt"
	"slices"
	"sort"

	"github.com/deployer-dev/deployer/config"
)

// FleetPlan is a plan for each engine, and what the engines disagree on.
type FleetPlan struct {
	FormatVersion string        `json:"format_version"`
	Project       string        `json:"project"`
	Engines       []*EnginePlan `json:"engines"`
	// Rollouts are the services that deploy on several engines, with their batches.
	Rollouts []*RolloutPlan `json:"rollouts,omitempty"`
	// OutOfStep names the services whose engines run different releases (a failed or
	// interrupted rollout), with what each runs.
	OutOfStep []string `json:"out_of_step,omitempty"`
	// Undeclared names the engines a service's live releases were deployed to that the
	// configuration no longer declares: the deployer does not reach them, and says what to do.
	Undeclared []string `json:"undeclared_engines,omitempty"`
}

// EnginePlan is one engine's plan, or why there is none.
type EnginePlan struct {
	Engine string `json:"engine"`
	Host   string `json:"host,omitempty"`
	Plan   *Plan  `json:"plan,omitempty"`
	Error  string `json:"error,omitempty"` // the engine could not be read
}

// RolloutPlan is how one service switches on its engines.
type RolloutPlan struct {
	Service   string     `json:"service"`
	Release   int        `json:"release"`
	Batches   [][]string `json:"batches"`
	Wait      string     `json:"wait,omitempty"`
	ImageFrom string     `json:"image_from,omitempty"` // the engine whose image the others get
}

// Implicit names the engine of a configuration without engine blocks: the project's own
// (docker { host }), which output names nowhere. Such a configuration is a fleet of that engine
// alone, planned, shown and saved as a single engine's plan (FleetPlan.Single).
const Implicit = ""

// EngineNames are the engines of a project, sorted: every engine block's, and the project's own
// when a service runs there; without engine blocks, the implicit engine alone.
func EngineNames(p *config.Project) []string {
	if !MultiEngine(p) {
		return []string{Implicit}
	}
	var out []string
	for name := range p.Engines {
		out = append(out, name)
	}
	for _, s := range p.Services {
		for _, e := range s.EngineNames() {
			if !slices.Contains(out, e) {
				out = append(out, e)
			}
		}
	}
	sort.Strings(out)
	return out
}

// MultiEngine reports whether the project names engines (engine blocks); without, it is the
// fleet of the implicit engine alone.
func MultiEngine(p *config.Project) bool { return len(p.Engines) > 0 }

// ServiceEngines are the engines a service runs on: without engine blocks the implicit engine,
// whatever the service (what works on it says what it lacks); else its engines, nil when it is
// not in the configuration.
func ServiceEngines(p *config.Project, service string) []string {
	if !MultiEngine(p) {
		return []string{Implicit}
	}
	if s := p.Service(service); s != nil {
		return s.EngineNames()
	}
	return nil
}

// ProjectOn is the project as one engine holds it: the services that run there; the implicit
// engine holds the whole project.
func ProjectOn(p *config.Project, engine string) *config.Project {
	if engine == Implicit {
		return p
	}
	cp := *p
	cp.Services = nil
	for _, s := range p.Services {
		if slices.Contains(s.EngineNames(), engine) {
			cp.Services = append(cp.Services, s)
		}
	}
	return &cp
}

// ChangesOf is an engine's changes; none without its plan.
func ChangesOf(ep *EnginePlan) []*Change {
	if ep.Plan == nil {
		return nil
	}
	return ep.Plan.Changes
}

// ChangeOf is a service's change in an engine's plan; nil without one (or without the plan).
func ChangeOf(ep *EnginePlan, service string) *Change {
	if ep == nil || ep.Plan == nil {
		return nil
	}
	return ep.Plan.Change(service)
}

// Deploys reports whether a change starts a new release (and so takes part in a rollout).
func Deploys(ch *Change) bool { return ch.Action == ActionCreate || ch.Action == ActionReplace }

func SortedInts(m map[int][]string) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// Single is the plan of a fleet that is the implicit engine alone (a configuration without
// engine blocks), nil for any other: such a fleet is shown and saved as that plan, as a
// configuration without engine blocks always was.
func (fp *FleetPlan) Single() *Plan {
	if len(fp.Engines) == 1 && fp.Engines[0].Engine == Implicit {
		return fp.Engines[0].Plan
	}
	return nil
}

// Alone is the fleet plan of the implicit engine alone, with its plan.
func Alone(pl *Plan) *FleetPlan {
	return &FleetPlan{FormatVersion: pl.FormatVersion, Project: pl.Project, Engines: []*EnginePlan{{Engine: Implicit, Host: pl.Engine, Plan: pl}}}
}

// Shown is what a fleet's plan is in JSON: Single's plan for the implicit engine alone, else
// the fleet's.
func (fp *FleetPlan) Shown() any {
	if pl := fp.Single(); pl != nil {
		return pl
	}
	return fp
}

// HasChanges reports whether the plan changes what runs on any engine (plan
// -detailed-exitcode). For the implicit engine alone: whether its plan has changes, as a single
// engine's plan always said (steps that only clean up what an interrupted apply left are not
// changes there); with engine blocks, any step counts too.
func (fp *FleetPlan) HasChanges() bool {
	if pl := fp.Single(); pl != nil {
		return pl.HasChanges()
	}
	return fp.HasSteps()
}

// HasSteps reports whether applying the plan would do anything on any engine.
func (fp *FleetPlan) HasSteps() bool {
	for _, ep := range fp.Engines {
		if ep.Plan != nil && (ep.Plan.HasChanges() || len(ep.Plan.Steps) > 0) {
			return true
		}
	}
	return false
}

// Unreachable names the engines that could not be read, with their errors.
func (fp *FleetPlan) Unreachable() []string {
	var out []string
	for _, ep := range fp.Engines {
		if ep.Error != "" {
			out = append(out, fmt.Sprintf("engine %s: %s", ep.Engine, ep.Error))
		}
	}
	return out
}

// KeyPlan is the engine plan whose project key hashes the sensitive values of a saved fleet
// plan (each engine keeps its own key): the first engine, by name, that was planned.
func (fp *FleetPlan) KeyPlan() *EnginePlan {
	for _, ep := range fp.Engines {
		if ep.Plan != nil {
			return ep
		}
	}
	return nil
}

// Engine is the plan of the engine named, or nil.
func (fp *FleetPlan) Engine(name string) *EnginePlan {
	for _, ep := range fp.Engines {
		if ep.Engine == name {
			return ep
		}
	}
	return nil
}

// Hold puts a fleet's plan in a saved plan: the implicit engine alone's as `plan`, as the plan
// file of a configuration without engine blocks always held it; any other as `fleet`.
func (sp *SavedPlan) Hold(fp *FleetPlan) {
	if pl := fp.Single(); pl != nil {
		sp.Plan = pl
		return
	}
	sp.Fleet = fp
}

// Planned is the fleet's plan a saved plan holds: its `fleet`, or its `plan` as the implicit
// engine's.
func (sp *SavedPlan) Planned() *FleetPlan {
	if sp.Fleet != nil {
		return sp.Fleet
	}
	return Alone(sp.Plan)
}

// Fresh is what Verify compares a saved plan with, for the configuration p now: replan plans
// every engine again, and is called only when the plan is of the configuration's kind (engine
// blocks, or the implicit engine alone). A plan of the other kind is stale as it is: nothing is
// read then. values are the variables' values now, by name.
func (sp *SavedPlan) Fresh(p *config.Project, values map[string]string, replan func() (*FleetPlan, error)) (Fresh, error) {
	now := Fresh{Values: values}
	if multi := MultiEngine(p); multi != (sp.Fleet != nil) {
		if multi {
			now.Fleet = &FleetPlan{} // engine blocks now, none in the saved plan
		}
		return now, nil
	}
	fp, err := replan()
	if err != nil {
		return now, err
	}
	if now.Plan = fp.Single(); now.Plan == nil {
		now.Fleet = fp
	}
	return now, nil
}
