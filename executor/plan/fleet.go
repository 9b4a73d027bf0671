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

// EngineNames are the engines of a project, sorted: every engine block's, and the project's own
// when a service runs there.
func EngineNames(p *config.Project) []string {
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

// MultiEngine reports whether the project names engines: then plans and apply go through a
// Fleet.
func MultiEngine(p *config.Project) bool { return len(p.Engines) > 0 }

// ProjectOn is the project as one engine holds it: the services that run there.
func ProjectOn(p *config.Project, engine string) *config.Project {
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

// HasChanges reports whether applying the plan would do anything on any engine.
func (fp *FleetPlan) HasChanges() bool {
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
