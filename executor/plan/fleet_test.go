package plan

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// A configuration without engine blocks is the fleet of the implicit engine alone: its plan is
// shown, in text and JSON, and saved exactly as a single engine's plan always was, and a plan
// file of the other kind is refused as stale without reading any engine.
func TestImplicitFleet(t *testing.T) {
	ctx := context.Background()
	p := project(nil)
	if got := EngineNames(p); len(got) != 1 || got[0] != Implicit {
		t.Errorf("the engines of a configuration without engine blocks: %q", got)
	}
	if got := ServiceEngines(p, "no-such-service"); len(got) != 1 || got[0] != Implicit {
		t.Errorf("a service without engine blocks runs on %q", got)
	}
	if ProjectOn(p, Implicit) != p {
		t.Error("the implicit engine does not hold the whole project")
	}

	eng := &fakeEngine{images: map[string]string{"web:1": "sha256:bbb"}, containers: []engine.Container{live(project(nil), "sha256:aaa", 3, "running")}}
	pl, err := Make(ctx, p, eng, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fp := Alone(pl)
	var single, fleet bytes.Buffer
	pl.WriteText(&single, RenderOptions{})
	fp.WriteText(&fleet, RenderOptions{})
	if single.String() != fleet.String() {
		t.Errorf("the implicit engine's plan as text:\n%s\nwant, as a single engine's:\n%s", fleet.String(), single.String())
	}
	single.Reset()
	fleet.Reset()
	pl.WriteJSON(&single)
	fp.WriteJSON(&fleet)
	if single.String() != fleet.String() {
		t.Errorf("the implicit engine's plan as JSON:\n%s\nwant, as a single engine's:\n%s", fleet.String(), single.String())
	}
	if fp.HasChanges() != pl.HasChanges() || !fp.HasSteps() {
		t.Errorf("changes %v, steps %v; the plan's changes: %v", fp.HasChanges(), fp.HasSteps(), pl.HasChanges())
	}

	path := filepath.Join(t.TempDir(), "p.plan")
	sp := &SavedPlan{Dir: "/cfg"}
	sp.Hold(fp)
	if err := WritePlanFile(path, sp); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), `"plan": {`) || strings.Contains(string(raw), `"fleet"`) {
		t.Errorf("the plan file of a configuration without engine blocks holds no single plan, or a fleet:\n%s", raw)
	}
	read, err := ReadPlanFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := read.Planned().Single(); got == nil || got.Fingerprint != pl.Fingerprint {
		t.Errorf("the saved plan read back as the implicit engine's: %+v", got)
	}

	// The same kind is planned again and compared; the other kind is stale, nothing read.
	replanned := 0
	replan := func() (*FleetPlan, error) { replanned++; return Alone(pl), nil }
	now, err := read.Fresh(p, nil, replan)
	if err != nil || replanned != 1 || now.Plan == nil || now.Fleet != nil {
		t.Fatalf("the same kind: planned %d times, %+v, %v", replanned, now, err)
	}
	if err := read.Verify(path, "again", now); err != nil {
		t.Errorf("the same configuration and state: %v", err)
	}
	blocks := project(nil)
	blocks.Engines = map[string]*config.Engine{"a": {Name: "a", Host: "ssh://a"}}
	now, _ = read.Fresh(blocks, nil, replan)
	if err := read.Verify(path, "again", now); replanned != 1 || err == nil || !strings.Contains(err.Error(), "the configuration has engine blocks now") {
		t.Errorf("engine blocks now: planned %d times, %v", replanned, err)
	}
	fleetFile := &SavedPlan{Fleet: &FleetPlan{Engines: []*EnginePlan{{Engine: "a", Plan: pl}}}}
	now, _ = fleetFile.Fresh(p, nil, replan)
	if err := fleetFile.Verify(path, "again", now); replanned != 1 || err == nil || !strings.Contains(err.Error(), "which the configuration no longer has") {
		t.Errorf("engine blocks gone: planned %d times, %v", replanned, err)
	}
}
