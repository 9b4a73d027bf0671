package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

func newApply(g *globals) *cobra.Command {
	var (
		autoApprove bool
		asJSON      bool
		targets     []string
	)
	cmd := &cobra.Command{
		Use:   "apply [DIR | PLANFILE] [-auto-approve] [-json] [-target service.NAME]",
		Short: "Deploy: blue-green, with health checks, backups and automatic rollback",
		Long: `Deploy what the configuration in DIR (default: the current directory) says, or exactly the
plan a PLANFILE saved (deployer plan -out PLANFILE), which is refused when the configuration or
what runs changed since. Without a PLANFILE apply shows the plan and asks for 'yes' on the
terminal; without a terminal (CI) it refuses unless -auto-approve.

For each service to change: take the deploy lock, check that its host ports and backup store
are ready, start the candidate beside the live release, check it, back up the data, cut over,
verify, and roll back by itself when anything fails. The last line says what is live.`,
		Args: argsBetween(0, 1, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := g.interruptible(cmd.Context())
			defer stop()
			if len(args) == 1 && isPlanFile(args[0]) {
				res, sp, err := g.loadPlanFile(ctx, args[0])
				if err != nil {
					if res != nil {
						return g.liveAfter(ctx, res.Project, asJSON, err)
					}
					return err
				}
				return g.applyFleet(ctx, res.Project, sp.Planned(), asJSON)
			}
			res, err := g.load(args)
			if err != nil {
				return err
			}
			return g.applyEngines(ctx, res.Project, targets, asJSON, autoApprove)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&autoApprove, "auto-approve", false, "apply without asking for confirmation")
	f.BoolVar(&asJSON, "json", false, "print one JSON event per line")
	f.StringArrayVar(&targets, "target", nil, "apply only `service.NAME` (repeatable)")
	return exitCodes(cmd, exitChanges)
}

// isPlanFile tells a saved plan from a configuration directory or file.
func isPlanFile(path string) bool {
	st, err := os.Stat(path)
	if err != nil || st.IsDir() || strings.HasSuffix(path, ".hcl") || strings.HasSuffix(path, ".hcl.json") {
		return false
	}
	_, err = plan.ReadPlanFile(path)
	return err == nil || strings.HasSuffix(path, ".plan")
}

// confirm asks for "yes" on a terminal; without one it refuses instead of hanging.
func (g *globals) confirm(what string) error {
	f, ok := g.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		g.fail(fmt.Errorf("%s needs confirmation, and there is no terminal to ask on: pass -auto-approve (as CI does)", what))
		return failed
	}
	fmt.Fprintf(g.stdout, "\nDo you want to %s? Only 'yes' is accepted: ", what)
	line, _ := bufio.NewReader(g.stdin).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		fmt.Fprintln(g.stderr, "Cancelled; nothing was changed.")
		return failed
	}
	return nil
}

// loadPlanFile reads a saved plan, loads the configuration it was made from with the same
// variable values, and refuses it when the configuration or what runs changed since (on any
// engine, for a configuration with engine blocks).
func (g *globals) loadPlanFile(ctx context.Context, path string) (*hclspec.Result, *plan.SavedPlan, error) {
	sp, err := plan.ReadPlanFile(path)
	if err != nil {
		return nil, nil, err
	}
	again := replanAdvice(sp, path)
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
		g.red = plan.NewRedactor(res.Project)
	}
	if diags.HasErrors() {
		g.writeDiagnostics(res, diags)
		g.fail(fmt.Errorf("the configuration of the plan in %s no longer loads; nothing was changed", path))
		return nil, nil, failed
	}
	// What runs now, planned again on every engine; plan.Verify compares.
	values := map[string]string{}
	for _, v := range res.Variables {
		values[v.Name] = v.Value
	}
	now, err := sp.Fresh(res.Project, values, func() (*plan.FleetPlan, error) { return g.planFleet(ctx, res.Project, nil, false) })
	if err != nil {
		return res, nil, err
	}
	if err := sp.Verify(path, again, now); err != nil {
		return res, nil, err
	}
	return res, sp, nil
}

// replanAdvice says how to make a stale plan again: the command, with the configuration and
// the variables the plan was made with, as they were given. A sensitive value is never in it:
// it is named as -var NAME=..., to be given again.
func replanAdvice(sp *plan.SavedPlan, path string) string {
	cmd := []string{"deployer", "plan"}
	wd, _ := os.Getwd()
	rel := func(p string) string {
		if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
		return p
	}
	if len(sp.Files) > 0 {
		for _, f := range sp.Files {
			cmd = append(cmd, "-f", shellQuote(rel(f)))
		}
	} else if sp.Dir != "" && sp.Dir != wd {
		cmd = append(cmd, shellQuote(rel(sp.Dir)))
	}
	cmd = append(cmd, "-out", shellQuote(path))
	var secret []string
	for _, v := range sp.Variables {
		switch {
		case strings.HasPrefix(v.Source, "-var ") && v.Sensitive:
			cmd = append(cmd, "-var", v.Name+"=...")
			secret = append(secret, v.Name)
		case strings.HasPrefix(v.Source, "-var "):
			cmd = append(cmd, "-var", shellQuote(v.Name+"="+varText(v.Value)))
		case v.Source == "default" || v.Source == "the plan file" || strings.HasPrefix(v.Source, "environment variable "):
		case strings.HasSuffix(v.Source, ".auto.vars.hcl"):
		default:
			cmd = append(cmd, "-var-file", shellQuote(v.Source))
		}
	}
	advice := "make it again with `" + strings.Join(dedupeVarFiles(cmd), " ") + "`"
	if len(secret) > 0 {
		advice += fmt.Sprintf(", giving the value of the sensitive %s in place of ... (a plan never holds it)", pluralWords(secret, "variable"))
	}
	return advice
}

// dedupeVarFiles keeps one -var-file FILE of each file (a file sets several variables).
func dedupeVarFiles(cmd []string) []string {
	var out []string
	seen := map[string]bool{}
	for i := 0; i < len(cmd); i++ {
		if cmd[i] == "-var-file" && i+1 < len(cmd) {
			if !seen[cmd[i+1]] {
				seen[cmd[i+1]] = true
				out = append(out, cmd[i], cmd[i+1])
			}
			i++
			continue
		}
		out = append(out, cmd[i])
	}
	return out
}

// varText is a saved variable's value as -var takes it: a string as it is, anything else as
// its (JSON, so HCL) expression.
func varText(saved string) string {
	var str string
	if json.Unmarshal([]byte(saved), &str) == nil {
		return str
	}
	return saved
}

// shellQuote quotes a word for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// pluralWords names words as "variable a" or "variables a, b".
func pluralWords(words []string, noun string) string {
	if len(words) == 1 {
		return noun + " " + words[0]
	}
	return noun + "s " + strings.Join(words, ", ")
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
	wait, err := g.lockWait()
	if err != nil {
		return nil, err
	}
	a := g.applierOf(p, wait, events)
	a.Runtime = eng
	a.ProbeHost = docker.ProbeHost(eng.Host())
	return a, nil
}

// lockWait is -lock-timeout: how long to wait for the deploy lock.
func (g *globals) lockWait() (time.Duration, error) {
	timeout, err := time.ParseDuration(g.lockTimeout)
	if err != nil || timeout < 0 {
		return 0, fmt.Errorf("-lock-timeout %q: write a duration such as 30s or 5m", g.lockTimeout)
	}
	return timeout, nil
}

// applierOf is the Applier of this deployer and this terminal, on no engine yet.
func (g *globals) applierOf(p *config.Project, wait time.Duration, events func(executor.Event)) *executor.Applier {
	return &executor.Applier{
		Project:     p,
		Events:      events,
		Holder:      holder(),
		LockTimeout: wait,
		Source:      source(p.Dir),
		Crash:       killAt(os.Getenv("DEPLOYER_TEST_KILL_AT")),
		Version:     versionString(),
		SelfBinary:  selfBinary(),
	}
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

// finish ends an apply or a rollback: a line for each service, and, when anything failed or it
// was interrupted, what is live now as the last line. err is a failure outside the services.
func (g *globals) finish(ctx context.Context, r *renderer, out *executor.Outcome, err error, live func(context.Context) string) error {
	interrupted := ctx.Err() != nil
	for _, s := range out.Services {
		name := address(s.Service, s.Engine)
		switch {
		case s.RolledBack && s.Error != "":
			r.problem(fmt.Sprintf("%s: %s", name, s.Error))
		case s.Error != "":
			r.problem(fmt.Sprintf("%s: failed: %s", name, s.Error))
		case s.Action == plan.ActionDelete:
			r.final(fmt.Sprintf("%s: removed (volumes kept), %.1fs", name, s.Seconds))
		default:
			r.final(fmt.Sprintf("%s: release %d live (image %s), %.1fs", name, s.Release, plan.ShortID(s.ImageID), s.Seconds))
		}
	}
	if err != nil {
		r.fail(err)
	}
	if err == nil && !interrupted && !out.Failed() {
		return nil
	}
	if interrupted {
		r.problem("Interrupted.")
	}
	r.live(live(ctx))
	return failedLive
}

// liveAfter ends an apply that failed before it changed anything (the plan could not be made,
// a saved plan is stale, the changes were not confirmed): the error, then what is live, read
// from the engines, as every failed apply's last line. An engine that does not answer has
// been named by the error; nothing more is said then.
func (g *globals) liveAfter(ctx context.Context, p *config.Project, asJSON bool, err error) error {
	var ee exitError
	if err == nil || errors.As(err, &ee) && (ee.live || ee.code != 1) {
		return err
	}
	if !errors.As(err, &ee) {
		g.fail(err)
	}
	r := newRenderer(g, asJSON)
	defer r.close()
	f, closeAll, cerr := g.connectFleet(p, nil, false)
	if cerr != nil {
		return failedLive
	}
	defer closeAll()
	engines := fleetEngines(f)
	// The implicit engine alone, not answering, has been named by the error; with engine
	// blocks the line says which engines answer and which do not.
	if len(engines) == 1 && engines[0].name == plan.Implicit && engines[0].eng.Ping(context.WithoutCancel(ctx)) != nil {
		return failedLive
	}
	r.live(liveNow(ctx, p, engines))
	return failedLive
}

// namedEngine is an engine and its name in a configuration with engine blocks (plan.Implicit,
// "", without).
type namedEngine struct {
	name string
	eng  executor.Engine
}

// liveNow says what is live now, as read from the engines: the last line of a failed or
// interrupted apply. It reads them even after an interruption, within a bound.
func liveNow(ctx context.Context, p *config.Project, engines []namedEngine) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	var parts, left []string
	for _, ne := range engines {
		obs, err := plan.Observe(ctx, ne.eng, p)
		if err != nil {
			parts = append(parts, fmt.Sprintf("engine %s cannot be read (%v)", ne.eng.Host(), err))
			continue
		}
		names := obs.ServiceNames()
		for _, s := range p.Services {
			if ne.name == "" || slices.Contains(s.EngineNames(), ne.name) {
				if obs.Services[s.Name] == nil {
					names = append(names, s.Name)
				}
			}
		}
		slices.Sort(names)
		for _, name := range names {
			st := obs.Services[name]
			switch {
			case st == nil || st.Live == nil:
				parts = append(parts, "nothing of "+address(name, ne.name))
			case st.Live.Running():
				parts = append(parts, fmt.Sprintf("%s release %d (%s, %s)", address(name, ne.name), st.Live.Release(), st.Live.Name, st.Live.State))
			default:
				parts = append(parts, fmt.Sprintf("%s release %d stopped (%s, %s): nothing serves", address(name, ne.name), st.Live.Release(), st.Live.Name, st.Live.State))
			}
			if st != nil {
				for _, c := range st.Candidates {
					left = append(left, "candidate "+c.Name)
				}
			}
		}
		if obs.Lock != nil {
			left = append(left, "the deploy lock on "+ne.eng.Host())
		}
	}
	line := "Live now: " + strings.Join(parts, "; ") + "."
	if len(left) > 0 {
		line += " Left over: " + strings.Join(left, ", ") + " (deployer plan shows them; the next apply removes them)."
	}
	return line
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
