package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// workflow is what the test reads of a GitHub Actions workflow.
type workflow struct {
	Jobs map[string]struct {
		If          string `yaml:"if"`
		Environment string `yaml:"environment"`
		Steps       []struct {
			Run string            `yaml:"run"`
			Env map[string]string `yaml:"env"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// The CI workflow users copy (examples/ci/deploy.yml) runs commands the deployer has, with flags
// it takes, that the README documents; validate and fmt run on every pull request without
// secrets; plan runs only for branches of the repository itself, in a protected environment;
// apply runs only on main, with a lock timeout; secrets reach the deployer as sensitive
// variables from the CI's secret store.
func TestCIWorkflowExample(t *testing.T) {
	raw, err := os.ReadFile("../../examples/ci/deploy.yml")
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	if err := yaml.Unmarshal(raw, &wf); err != nil {
		t.Fatalf("the workflow is not YAML: %v", err)
	}
	readme, _ := os.ReadFile("../../README.md")
	commands := map[string][]string{} // job -> deployer command lines
	for name, job := range wf.Jobs {
		for _, st := range job.Steps {
			script := strings.ReplaceAll(st.Run, "\\\n", " ")
			for _, line := range strings.Split(script, "\n") {
				for _, part := range regexp.MustCompile(`&&|;|\|\|`).Split(line, -1) {
					part = strings.TrimSpace(part)
					if strings.HasPrefix(part, "deployer ") {
						commands[name] = append(commands[name], strings.SplitN(part, " >", 2)[0])
					}
				}
			}
		}
	}
	for job, lines := range commands {
		for _, line := range lines {
			args := strings.Fields(line)[1:]
			root, g := newRoot(nil, io.Discard, io.Discard)
			g.args = normalizeArgs(root, args)
			cmd, rest, err := root.Find(g.args)
			if err != nil || cmd == root {
				t.Errorf("%s: %q is not a deployer command: %v", job, line, err)
				continue
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Errorf("%s: %q: %v", job, line, err)
			}
			if !strings.Contains(string(readme), cmd.CommandPath()+" ") {
				t.Errorf("%s: %q: the README does not document %q", job, line, cmd.CommandPath())
			}
		}
	}
	has := func(job, want string) bool {
		for _, l := range commands[job] {
			if strings.Contains(l, want) {
				return true
			}
		}
		return false
	}
	check := wf.Jobs["check"]
	if check.If != "" || !has("check", "deployer validate") || !has("check", "deployer fmt -check") {
		t.Errorf("check: every pull request validates and checks the format: %+v", commands["check"])
	}
	for _, st := range check.Steps {
		if strings.Contains(st.Run+strings.Join(values(st.Env), " "), "secrets.") {
			t.Error("check uses secrets: it runs for forks' pull requests")
		}
	}
	plan := wf.Jobs["plan"]
	if !strings.Contains(plan.If, "github.event.pull_request.head.repo.full_name == github.repository") || plan.Environment == "" || !has("plan", "-detailed-exitcode") {
		t.Errorf("plan: only branches of the repository, in a protected environment, with -detailed-exitcode: if %q environment %q", plan.If, plan.Environment)
	}
	apply := wf.Jobs["apply"]
	if !strings.Contains(apply.If, "refs/heads/main") || apply.Environment == "" || !has("apply", "-auto-approve") || !has("apply", "-lock-timeout") || !has("apply", "docker_host=ssh://") {
		t.Errorf("apply: main only, with -auto-approve and a lock timeout, over ssh://: if %q %v", apply.If, commands["apply"])
	}
	secretVar := false
	for _, st := range apply.Steps {
		for k, v := range st.Env {
			secretVar = secretVar || strings.HasPrefix(k, "DEPLOYER_VAR_") && strings.Contains(v, "secrets.")
		}
	}
	if !secretVar {
		t.Error("apply passes no secret as a sensitive variable (DEPLOYER_VAR_...)")
	}
	if !strings.Contains(string(readme), "examples/ci/deploy.yml") || !strings.Contains(string(readme), "fork") {
		t.Error("the README does not point at the workflow or say why plan does not run for forks")
	}
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
