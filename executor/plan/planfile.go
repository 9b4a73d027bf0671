package plan

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// SavedPlan is the file `plan -out` writes and `apply PLANFILE` reads: the plan, with what it was
// made from. Sensitive variable values are stored as a hash only; apply reads them again and
// refuses the plan if the hash differs.
type SavedPlan struct {
	FormatVersion string `json:"format_version"`
	Plan          *Plan  `json:"plan"`
	// Fleet is the plan of a configuration with engine blocks, instead of Plan.
	Fleet     *FleetPlan      `json:"fleet,omitempty"`
	Dir       string          `json:"dir"`             // absolute configuration directory
	Files     []string        `json:"files,omitempty"` // -f files, when given
	Variables []SavedVariable `json:"variables"`
}

// SavedVariable is a variable's value as the plan saw it.
type SavedVariable struct {
	Name      string `json:"name"`
	Sensitive bool   `json:"sensitive,omitempty"`
	Value     string `json:"value,omitempty"` // JSON; empty for sensitive variables
	Hash      string `json:"hash,omitempty"`  // sensitive variables only
	Source    string `json:"source"`
}

// WritePlanFile saves a plan for a later apply. The file is written with mode 0600: it names
// the project's containers and images.
func WritePlanFile(path string, sp *SavedPlan) error {
	sp.FormatVersion = FormatVersion
	b, err := json.MarshalIndent(sp, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save plan: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save plan: %w", err)
	}
	return nil
}

// ReadPlanFile loads a saved plan, refusing files of another format version.
func ReadPlanFile(path string) (*SavedPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan file: %w", err)
	}
	var sp SavedPlan
	if err := json.Unmarshal(b, &sp); err != nil || sp.Plan == nil && sp.Fleet == nil || !sp.whole() {
		return nil, fmt.Errorf("%s is not a plan file written by `deployer plan -out`", path)
	}
	if sp.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%s has plan format %q; this deployer reads %q: run `deployer plan -out` again", path, sp.FormatVersion, FormatVersion)
	}
	return &sp, nil
}

// whole reports whether every entry the plan's lists hold is there: `plan -out` writes no null
// change, step, engine or rollout, and one written by hand is refused rather than acted on.
func (sp *SavedPlan) whole() bool {
	plans := []*Plan{sp.Plan}
	if sp.Fleet != nil {
		for _, ep := range sp.Fleet.Engines {
			if ep == nil {
				return false
			}
			plans = append(plans, ep.Plan)
		}
		for _, ro := range sp.Fleet.Rollouts {
			if ro == nil {
				return false
			}
		}
	}
	for _, pl := range plans {
		if pl == nil {
			continue
		}
		for _, c := range pl.Changes {
			if c == nil {
				return false
			}
		}
		for _, st := range pl.Steps {
			if st == nil {
				return false
			}
		}
	}
	return true
}

// Fresh is what runs now, planned again from the configuration a saved plan was made from:
// Plan for a configuration without engine blocks, Fleet for one with them. Values are the
// variables' values now, by name (sensitive ones included: only their hashes are compared).
type Fresh struct {
	Plan   *Plan
	Fleet  *FleetPlan
	Values map[string]string
}

// Verify refuses a saved plan that no longer says what apply would do: the configuration has
// or lacks engine blocks now, its engines changed, a sensitive variable has another value, the
// project's key is gone, or the configuration or what runs changed since it was made. path
// names the plan file; again says how to make it again, and ends each error.
func (sp *SavedPlan) Verify(path, again string, now Fresh) error {
	stale := func(format string, args ...any) error {
		return fmt.Errorf("plan %s is stale: %s; %s", path, fmt.Sprintf(format, args...), again)
	}
	type pair struct{ saved, fresh *Plan }
	var pairs []pair
	switch {
	case sp.Fleet != nil && now.Fleet == nil:
		return stale("it was made for engine blocks, which the configuration no longer has")
	case sp.Fleet == nil && now.Fleet != nil:
		return stale("the configuration has engine blocks now")
	case sp.Fleet != nil:
		if bad := now.Fleet.Unreachable(); len(bad) > 0 {
			return fmt.Errorf("%s; nothing was changed (apply changes every engine or none)", strings.Join(bad, "; "))
		}
		for _, ep := range sp.Fleet.Engines {
			fresh := now.Fleet.Engine(ep.Engine)
			if fresh == nil || ep.Plan != nil && fresh.Plan == nil {
				return stale("the configuration's engines changed since it was made")
			}
			if ep.Plan != nil {
				pairs = append(pairs, pair{ep.Plan, fresh.Plan})
			}
		}
		if len(now.Fleet.Engines) != len(sp.Fleet.Engines) {
			return stale("the configuration's engines changed since it was made")
		}
	default:
		if sp.Plan == nil || now.Plan == nil {
			return stale("it holds no plan")
		}
		pairs = append(pairs, pair{sp.Plan, now.Plan})
	}
	for _, v := range sp.Variables {
		if !v.Sensitive || len(pairs) == 0 {
			continue
		}
		if value, ok := now.Values[v.Name]; ok && pairs[0].fresh.HashSensitive(value) != v.Hash {
			return fmt.Errorf("plan %s: the sensitive variable %s has another value than when the plan was made; give it the same value (its value is never saved), or %s", path, v.Name, again)
		}
	}
	for _, pr := range pairs {
		if pr.fresh.Keyless() {
			return stale("the project's key on %s, which the plan's hashes were made with, is gone (its volume was removed)", pr.fresh.Engine)
		}
		if pr.fresh.Fingerprint.Config != pr.saved.Fingerprint.Config {
			return stale("the configuration (files, variables or build contexts) changed since it was made")
		}
		if pr.fresh.Fingerprint.State != pr.saved.Fingerprint.State {
			return stale("what runs on %s changed since it was made (%s)", pr.fresh.Engine, stateDiff(pr.saved, pr.fresh))
		}
	}
	return nil
}

// stateDiff names the services whose planned action changed.
func stateDiff(old, now *Plan) string {
	var diffs []string
	for _, c := range now.Changes {
		o := old.Change(c.Service)
		switch {
		case o == nil:
			diffs = append(diffs, fmt.Sprintf("service.%s is new", c.Service))
		case o.Action != c.Action || o.LiveRelease != c.LiveRelease:
			diffs = append(diffs, fmt.Sprintf("service.%s: was %s of release %d, now %s of release %d", c.Service, o.Action, o.LiveRelease, c.Action, c.LiveRelease))
		}
	}
	if len(diffs) == 0 {
		return "containers or images were replaced, started or stopped"
	}
	return strings.Join(diffs, "; ")
}
