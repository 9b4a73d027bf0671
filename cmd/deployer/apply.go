package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/hclspec"
)

func newApply(g *globals) *cobra.Command {
	var (
		autoApprove bool
		asJSON      bool
		targets     []string
	)
	cmd := &cobra.Command{
		Use:   "apply [DIR | PLANFILE]",
		Short: "Deploy: blue-green, with health checks, backups and automatic rollback",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var (
				res  *hclspec.Result
				plan *executor.Plan
				err  error
			)
			if len(args) == 1 && isPlanFile(args[0]) {
				var sp *executor.SavedPlan
				if res, sp, err = g.loadPlanFile(ctx, args[0]); err != nil {
					return err
				}
				if sp.Fleet != nil {
					return g.applyFleet(ctx, res.Project, sp.Fleet, asJSON)
				}
				plan = sp.Plan
			} else {
				if res, err = g.load(args); err != nil {
					return err
				}
				if executor.MultiEngine(res.Project) {
					return g.applyEngines(ctx, res.Project, targets, asJSON, autoApprove)
				}
				if plan, err = g.makePlan(ctx, res.Project, targets); err != nil {
					return err
				}
				if !asJSON {
					if err := plan.WriteText(g.stdout, executor.RenderOptions{Color: g.color(g.stdout)}); err != nil {
						return err
					}
				}
				if len(plan.Steps) == 0 {
					return nil
				}
				if !autoApprove {
					if err := g.confirm("apply these changes"); err != nil {
						return err
					}
				}
			}
			return g.apply(ctx, res.Project, plan, asJSON)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&autoApprove, "auto-approve", false, "apply without asking for confirmation")
	f.BoolVar(&asJSON, "json", false, "print one JSON event per line")
	f.StringArrayVar(&targets, "target", nil, "apply only `service.NAME` (repeatable)")
	return cmd
}

// isPlanFile tells a saved plan from a configuration directory or file.
func isPlanFile(path string) bool {
	st, err := os.Stat(path)
	if err != nil || st.IsDir() || strings.HasSuffix(path, ".hcl") || strings.HasSuffix(path, ".hcl.json") {
		return false
	}
	_, err = executor.ReadPlanFile(path)
	return err == nil || strings.HasSuffix(path, ".plan")
}

// confirm asks for "yes" on a terminal; without one it refuses instead of hanging.
func (g *globals) confirm(what string) error {
	f, ok := g.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(g.stderr, "Error: %s needs confirmation, and there is no terminal to ask on: pass -auto-approve (as CI does).\n", what)
		return failed
	}
	fmt.Fprintf(g.stdout, "\nDo you want to %s? Only 'yes' is accepted: ", what)
	line, _ := bufio.NewReader(g.stdin).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		fmt.Fprintln(g.stdout, "Cancelled; nothing was changed.")
		return failed
	}
	return nil
}

// loadPlanFile reads a saved plan, loads the configuration it was made from with the same
// variable values, and refuses it when the configuration or what runs changed since (on any
// engine, for a configuration with engine blocks).
func (g *globals) loadPlanFile(ctx context.Context, path string) (*hclspec.Result, *executor.SavedPlan, error) {
	sp, err := executor.ReadPlanFile(path)
	if err != nil {
		return nil, nil, err
	}
	var vars []hclspec.VarArg
	for _, v := range sp.Variables {
		if !v.Sensitive {
			vars = append(vars, hclspec.VarArg{Name: v.Name, Value: v.Value, JSON: true})
		}
	}
	more, err := g.varArgs()
	if err != nil {
		return nil, nil, err
	}
	opts := hclspec.Options{Dir: sp.Dir, Files: sp.Files, Env: os.Environ(), Vars: append(more, vars...)}
	res, diags := hclspec.Load(opts)
	if res.Project != nil {
		g.red = executor.NewRedactor(res.Project)
	}
	if diags.HasErrors() {
		res.WriteDiagnostics(g.stderr, diags, g.color(g.stderr))
		fmt.Fprintf(g.stderr, "The configuration of the plan in %s no longer loads; nothing was changed.\n", path)
		return nil, nil, failed
	}
	// The saved plans, each beside the one made now: one, or one per engine.
	type pair struct {
		engine       string
		saved, fresh *executor.Plan
	}
	var pairs []pair
	if sp.Fleet != nil {
		if !executor.MultiEngine(res.Project) {
			return nil, nil, fmt.Errorf("plan %s is stale: it was made for engine blocks, which the configuration no longer has; run `deployer plan -out %s` again", path, path)
		}
		fresh, err := g.planFleet(ctx, res.Project, nil)
		if err != nil {
			return nil, nil, err
		}
		if bad := fresh.Unreachable(); len(bad) > 0 {
			return nil, nil, fmt.Errorf("%s; nothing was changed (apply changes every engine or none)", strings.Join(bad, "; "))
		}
		for _, ep := range sp.Fleet.Engines {
			now := fresh.Engine(ep.Engine)
			if now == nil || ep.Plan != nil && now.Plan == nil {
				return nil, nil, fmt.Errorf("plan %s is stale: the configuration's engines changed since it was made; run `deployer plan -out %s` again", path, path)
			}
			if ep.Plan != nil {
				pairs = append(pairs, pair{ep.Engine, ep.Plan, now.Plan})
			}
		}
		if len(fresh.Engines) != len(sp.Fleet.Engines) {
			return nil, nil, fmt.Errorf("plan %s is stale: the configuration's engines changed since it was made; run `deployer plan -out %s` again", path, path)
		}
	} else {
		if executor.MultiEngine(res.Project) {
			return nil, nil, fmt.Errorf("plan %s is stale: the configuration has engine blocks now; run `deployer plan -out %s` again", path, path)
		}
		fresh, err := g.makePlan(ctx, res.Project, nil)
		if err != nil {
			return nil, nil, err
		}
		pairs = append(pairs, pair{"", sp.Plan, fresh})
	}
	for _, v := range sp.Variables {
		if !v.Sensitive || len(pairs) == 0 {
			continue
		}
		for _, now := range res.Variables {
			if now.Name == v.Name && pairs[0].fresh.HashSensitive(now.Value) != v.Hash {
				return nil, nil, fmt.Errorf("plan %s: the sensitive variable %s has another value than when the plan was made; give it the same value (its value is never saved) or run `deployer plan -out` again", path, v.Name)
			}
		}
	}
	for _, pr := range pairs {
		if pr.fresh.Fingerprint.Config != pr.saved.Fingerprint.Config {
			return nil, nil, fmt.Errorf("plan %s is stale: the configuration (files, variables or build contexts) changed since it was made; run `deployer plan -out %s` again", path, path)
		}
		if pr.fresh.Fingerprint.State != pr.saved.Fingerprint.State {
			return nil, nil, fmt.Errorf("plan %s is stale: what runs on %s changed since it was made (%s); run `deployer plan -out %s` again", path, pr.fresh.Engine, stateDiff(pr.saved, pr.fresh), path)
		}
	}
	return res, sp, nil
}

// stateDiff names the services whose planned action changed.
func stateDiff(old, now *executor.Plan) string {
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

// holder names this deployer for the lock: user@host and pid, and the CI job when known.
func holder() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	h := fmt.Sprintf("%s@%s pid %d", name, host, os.Getpid())
	for _, k := range []string{"GITHUB_RUN_ID", "CI_JOB_ID", "BUILD_ID"} {
		if v := os.Getenv(k); v != "" {
			h += fmt.Sprintf(" (%s %s)", k, v)
			break
		}
	}
	return h
}

// applier wires the executor to this engine and this terminal.
func (g *globals) applier(p *config.Project, eng *docker.Engine, events func(executor.Event)) (*executor.Applier, error) {
	timeout, err := time.ParseDuration(g.lockTimeout)
	if err != nil || timeout < 0 {
		return nil, fmt.Errorf("-lock-timeout %q: write a duration such as 30s or 5m", g.lockTimeout)
	}
	a := &executor.Applier{
		Project:     p,
		Runtime:     eng,
		Events:      events,
		Holder:      holder(),
		LockTimeout: timeout,
		Source:      source(p.Dir),
		Crash:       killAt(os.Getenv("DEPLOYER_TEST_KILL_AT")),
		Version:     versionString(),
		SelfBinary:  selfBinary(),
	}
	if eng != nil {
		a.ProbeHost = docker.ProbeHost(eng.Host())
	}
	return a, nil
}

// killAt makes the deployer kill itself (SIGKILL) at the named kill point: crash tests stop it
// there to check that the next apply converges. Nil without one.
func killAt(point string) func(string) {
	if point == "" {
		return nil
	}
	return func(p string) {
		if p == point {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never reached
		}
	}
}

func (g *globals) apply(ctx context.Context, p *config.Project, plan *executor.Plan, asJSON bool) error {
	eng, err := g.engine(p)
	if err != nil {
		return err
	}
	defer eng.Close()
	r := newRenderer(g.stdout, asJSON, g.color(g.stdout))
	r.red = g.red
	defer r.close()
	a, err := g.applier(p, eng, r.event)
	if err != nil {
		return err
	}
	out, err := a.Apply(ctx, plan)
	r.close()
	if err != nil {
		r.final(fmt.Sprintf("Error: %s", err))
		return failed
	}
	return g.summarize(r, out, ctx.Err() != nil)
}

// summarize prints the last line(s): what is live now, or what failed and what runs.
func (g *globals) summarize(r *renderer, out *executor.Outcome, interrupted bool) error {
	for _, s := range out.Services {
		name := "service." + s.Service
		if s.Engine != "" {
			name += "[" + s.Engine + "]"
		}
		switch {
		case s.RolledBack && s.Error != "":
			r.final(fmt.Sprintf("%s: %s", name, s.Error))
		case s.Error != "":
			r.final(fmt.Sprintf("%s: failed: %s", name, s.Error))
		case s.Action == executor.ActionDelete:
			r.final(fmt.Sprintf("%s: removed (volumes kept), %.1fs", name, s.Seconds))
		default:
			r.final(fmt.Sprintf("%s: release %d live (image %s), %.1fs", name, s.Release, executor.ShortID(s.ImageID), s.Seconds))
		}
	}
	if interrupted {
		r.final("Interrupted: the live release keeps serving; the candidate was removed and the lock released.")
		return failed
	}
	if out.Failed() {
		return failed
	}
	return nil
}

// source is the git commit of the configuration directory, when it is a checkout.
func source(dir string) string {
	for _, k := range []string{"DEPLOYER_SOURCE", "GITHUB_SHA", "CI_COMMIT_SHA"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	return gitHead(abs)
}

func gitHead(dir string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// selfBinary is this deployer's executable, for the helper image of restores.
func selfBinary() string {
	p, err := os.Executable()
	if err != nil {
		return ""
	}
	return p
}
