package plan

import (
	"encoding/json"
	"fmt"
	"os"
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
	if err := json.Unmarshal(b, &sp); err != nil || sp.Plan == nil && sp.Fleet == nil {
		return nil, fmt.Errorf("%s is not a plan file written by `deployer plan -out`", path)
	}
	if sp.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%s has plan format %q; this deployer reads %q: run `deployer plan -out` again", path, sp.FormatVersion, FormatVersion)
	}
	return &sp, nil
}
