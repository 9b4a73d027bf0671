package plan

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// A saved plan is applied only while it still says what apply would do: each way it goes stale
// is refused with its own reason and the advice to make it again, and a sensitive value is
// compared by its hash only.
func TestSavedPlanVerify(t *testing.T) {
	ctx := context.Background()
	p := project(nil)
	eng := &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{live(p, "sha256:aaa", 3, "running")}}
	made, err := Make(ctx, p, eng, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saved := &SavedPlan{Plan: made, Variables: []SavedVariable{{Name: "token", Sensitive: true, Hash: made.HashSensitive("s3cr3t"), Source: "-var token"}}}
	again := "make it again with `deployer plan -out p.json`"
	fresh := func(mod func(s *config.Service)) *Plan {
		pl, err := Make(ctx, project(mod), eng, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return pl
	}
	values := map[string]string{"token": "s3cr3t"}
	if err := saved.Verify("p.json", again, Fresh{Plan: fresh(nil), Values: values}); err != nil {
		t.Fatalf("the same configuration and state: %v", err)
	}
	cases := []struct {
		name string
		now  func() Fresh
		want string
	}{
		{"configuration", func() Fresh {
			return Fresh{Plan: fresh(func(s *config.Service) { s.Env["MODE"] = "debug" }), Values: values}
		}, "the configuration (files, variables or build contexts) changed since it was made"},
		{"state", func() Fresh {
			eng.containers[0].State = "exited"
			defer func() { eng.containers[0].State = "running" }()
			return Fresh{Plan: fresh(nil), Values: values}
		}, "what runs on unix:///fake/docker.sock changed since it was made (service.web: was no-op of release 3, now update of release 3)"},
		{"sensitive value", func() Fresh {
			return Fresh{Plan: fresh(nil), Values: map[string]string{"token": "rotated"}}
		}, "the sensitive variable token has another value than when the plan was made"},
		{"engine blocks now", func() Fresh { return Fresh{Fleet: &FleetPlan{}, Values: values} }, "the configuration has engine blocks now"},
	}
	for _, c := range cases {
		err := saved.Verify("p.json", again, c.now())
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasSuffix(err.Error(), again) {
			t.Errorf("%s: %v, want %q ending with the advice", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: the error names the secret: %v", c.name, err)
		}
	}
	fleet := &SavedPlan{Fleet: &FleetPlan{Engines: []*EnginePlan{{Engine: "a", Plan: made}}}}
	if err := fleet.Verify("p.json", again, Fresh{Plan: fresh(nil)}); err == nil || !strings.Contains(err.Error(), "it was made for engine blocks, which the configuration no longer has") {
		t.Errorf("engine blocks gone: %v", err)
	}
	if err := fleet.Verify("p.json", again, Fresh{Fleet: &FleetPlan{Engines: []*EnginePlan{{Engine: "b", Plan: made}}}}); err == nil || !strings.Contains(err.Error(), "the configuration's engines changed") {
		t.Errorf("another engine: %v", err)
	}
	if err := fleet.Verify("p.json", again, Fresh{Fleet: &FleetPlan{Engines: []*EnginePlan{{Engine: "a", Plan: fresh(nil)}}}}); err != nil {
		t.Errorf("the same engine and plan: %v", err)
	}
}

// A plan file written by hand with null entries is refused as no plan file, never acted on (a
// crash before).
func TestReadPlanFileRefusesNullEntries(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"null engine":  `{"format_version":"` + FormatVersion + `","fleet":{"engines":[null]}}`,
		"null change":  `{"format_version":"` + FormatVersion + `","plan":{"changes":[null]}}`,
		"null step":    `{"format_version":"` + FormatVersion + `","plan":{"steps":[null]}}`,
		"null rollout": `{"format_version":"` + FormatVersion + `","fleet":{"engines":[],"rollouts":[null]}}`,
		"engine step":  `{"format_version":"` + FormatVersion + `","fleet":{"engines":[{"engine":"a","plan":{"steps":[null]}}]}}`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadPlanFile(path); err == nil || !strings.Contains(err.Error(), "is not a plan file written by `deployer plan -out`") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
