package executor

import (
	"fmt"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
)

// Step names, in the order of the apply sequence. Apply runs a plan's steps by these names.
const (
	StepLock      = "lock"
	StepProxy     = "proxy" // the project's proxy: cutovers and checks on the engine's host
	StepClean     = "clean" // remove leftovers of an interrupted apply
	StepBuild     = "build" // build.before, then an image build
	StepImage     = "image" // use (or pull) a named image
	StepCandidate = "candidate"
	StepRunning   = "check.running"
	StepHealth    = "check.health"
	StepCanary    = "check.canary" // + "." + name
	StepSQLite    = "check.sqlite" // + "." + name
	StepHook      = "hook"         // + "." + when
	StepBackup    = "backup"
	StepCutover   = "cutover"
	StepStart     = "start" // first release of a new service
	StepVerify    = "verify"
	StepCleanup   = "cleanup"
	StepResume    = "resume" // start a stopped live release
	StepRemove    = "remove"
	StepUnlock    = "unlock"
)

// steps orders what apply will do: the lock, then each changed service through the sequence of
// the design (image, candidate, checks, backup, cutover, verify, clean-up), then the unlock.
func steps(p *config.Project, plan *Plan, red *Redactor) []*Step {
	var out []*Step
	add := func(service, name, detail string, args ...any) {
		out = append(out, &Step{Service: service, Name: name, Detail: fmt.Sprintf(detail, args...)})
	}
	if !plan.HasChanges() && len(plan.Leftovers) == 0 {
		return []*Step{}
	}
	add("", StepLock, "take the deploy lock of project %q", p.Name)
	for _, l := range plan.Leftovers {
		switch l.Kind {
		case "candidate":
			add(l.Service, StepClean, "remove the leftover %s", strings.SplitN(l.Detail, " from", 2)[0])
		case "extra":
			add(l.Service, StepCleanup, "keep the %s", strings.SplitN(l.Detail, " besides", 2)[0]+" as a previous release")
		}
	}
	for _, ch := range plan.Changes {
		if t := ch.Takeover; t != nil && t.SetAside && t.Kept {
			add(ch.Service, StepCleanup, "remove %s: it is kept as release %d already", t.Name, t.Release)
		} else if t != nil && t.SetAside {
			add(ch.Service, StepCleanup, "keep %s (taken over: %s) as release %d, with the deployer's labels", t.Name, t.Made, t.Release)
		}
	}
	local := LocalEngine(plan.Engine)
	proxyFor := ""
	for _, l := range plan.Leftovers {
		if l.Kind == "proxy" || l.Kind == "proxy-upgrade" {
			proxyFor = "route to the live releases"
		}
	}
	for _, ch := range plan.Changes {
		s := p.Service(ch.Service)
		if s == nil || ch.Action == ActionNone || ch.Action == ActionDelete || !proxied(s) && local {
			continue
		}
		switch {
		case local:
			proxyFor = "route to the live releases"
		case proxied(s):
			proxyFor = "route to the live releases and run the health checks"
		case proxyFor == "":
			proxyFor = "run the health checks from the engine's host"
		}
	}
	if proxyFor != "" {
		add("", StepProxy, "make sure %s runs this deployer and is ready to %s", ProxyName(p.Name), proxyFor)
	}
	for _, ch := range plan.Changes {
		s := p.Service(ch.Service)
		switch ch.Action {
		case ActionDelete:
			add(ch.Service, StepRemove, "stop and remove %s of service %q (its volumes are kept)", plural(len(ch.RemoveIDs), "container"), ch.Service)
			continue
		case ActionUpdate:
			add(ch.Service, StepResume, "start the stopped live release %d (%s), then health-check it", ch.LiveRelease, ch.Container)
			continue
		case ActionNone:
			continue
		}
		switch {
		case s.Build != nil && ch.ImageID == "":
			before := ""
			if len(s.Build.Before) > 0 {
				before = fmt.Sprintf("run `%s`, then ", red.words(s.Build.Before))
			}
			add(s.Name, StepBuild, "%sbuild %s from %s (%s)", before, s.Image, s.Build.Context, s.Build.Dockerfile)
		case ch.ImageID == "":
			add(s.Name, StepImage, "pull %s", s.Image)
		default:
			add(s.Name, StepImage, "use %s (%s)", s.Image, short(ch.ImageID))
		}
		add(s.Name, StepCandidate, "create and start %s-green (release %d)%s", s.ContainerName, ch.NextRelease, candidateWhere(s))
		add(s.Name, StepRunning, "the candidate keeps running")
		if h := s.HealthCheck; h != nil {
			add(s.Name, StepHealth, "GET %s until %d consecutive %s, every %s, within %s", h.Path, h.Healthy, statusText(h.Status), dur(h.Interval), dur(h.Deadline))
		}
		for _, c := range s.Canaries {
			body := ""
			if c.BodyContains != "" {
				body = fmt.Sprintf(" with a body containing %q", c.BodyContains)
			}
			add(s.Name, StepCanary+"."+c.Name, "GET %s answers %s%s", c.Path, statusText(c.Status), body)
		}
		for _, db := range s.SQLite {
			what := ""
			if len(db.SeedIfEmpty) > 0 {
				what = fmt.Sprintf("seed with `%s` if empty, then ", red.words(db.SeedIfEmpty))
			}
			if db.QuickCheck {
				what += "PRAGMA quick_check"
			} else {
				what = strings.TrimSuffix(what, ", then ")
			}
			add(s.Name, StepSQLite+"."+db.Name, "%s/%s: %s", db.Volume, db.Path, what)
		}
		for _, h := range s.Hooks {
			add(s.Name, StepHook+"."+h.When, "run `%s` in a one-off container of the new image", red.words(h.Command))
		}
		replacing := ch.Action == ActionReplace || ch.Action == ActionTakeover
		if b := s.Backup; b != nil && replacing {
			extra := ""
			if b.Consistency == "pause" {
				extra = ", pausing the live release while its files are read"
			}
			if b.Logs {
				extra += ", with its logs"
			}
			of := fmt.Sprintf("release %d", ch.LiveRelease)
			if ch.Action == ActionTakeover {
				of = "the container " + ch.Takeover.Name
			}
			add(s.Name, StepBackup, "back up %s of %s to backup_store.%s%s; keep %d", strings.Join(b.Volumes, ", "), of, b.Store, extra, b.Keep)
		}
		hostPorts := hostPortList(s)
		if ch.Action == ActionCreate {
			add(s.Name, StepStart, "start release %d as %s on %s", ch.NextRelease, s.ContainerName, hostPorts)
		} else if ch.Action == ActionTakeover && s.Deploy.Cutover == "proxy" {
			add(s.Name, StepCutover, "stop %s, which publishes %s itself, and give the port to the proxy, routed to release %d: this one switch has a window without service, as long as a restart's", ch.Takeover.Name, hostPorts, ch.NextRelease)
		} else if ch.Action == ActionTakeover {
			add(s.Name, StepCutover, "restart: stop %s (up to %s), start release %d as %s on %s", ch.Takeover.Name, dur(s.Deploy.StopTimeout), ch.NextRelease, s.ContainerName, hostPorts)
		} else if s.Deploy.Cutover == "proxy" {
			add(s.Name, StepCutover, "proxy: route new requests on %s to release %d, drain release %d for up to %s, then stop it", hostPorts, ch.NextRelease, ch.LiveRelease, dur(s.Deploy.Drain))
		} else {
			add(s.Name, StepCutover, "restart: stop release %d (%s, up to %s), start release %d as %s on %s", ch.LiveRelease, ch.Container, dur(s.Deploy.StopTimeout), ch.NextRelease, s.ContainerName, hostPorts)
		}
		verify := "health-check the new live release through " + hostPorts
		if replacing && s.Deploy.AutoRollback {
			verify += fmt.Sprintf("; on failure roll back to release %d", ch.LiveRelease)
		}
		add(s.Name, StepVerify, "%s", verify)
		keep := ""
		if ch.Action == ActionTakeover {
			keep = fmt.Sprintf("; keep %s as release %d, with the deployer's labels, for rollback", ch.Takeover.Name, ch.LiveRelease)
		}
		add(s.Name, StepCleanup, "remove the candidate, keep %s%s%s", plural(s.Deploy.KeepReleases, "previous release"), keep, pruneText(ch.Prune))
	}
	add("", StepUnlock, "release the deploy lock")
	return out
}

// pruneText names the releases a clean-up removes, and which images go with them.
func pruneText(list []Pruned) string {
	var parts []string
	for _, p := range list {
		what := fmt.Sprintf("release %d (%s)", p.Release, p.Container)
		if p.RemoveImage {
			what += fmt.Sprintf(" with its image %s (%s)", p.Image, short(p.ImageID))
		} else {
			what += fmt.Sprintf(", keeping its image %s (%s): %s", p.Image, short(p.ImageID), p.KeptBecause)
		}
		parts = append(parts, what)
	}
	if len(parts) == 0 {
		return ""
	}
	return "; remove " + strings.Join(parts, "; remove ")
}

// candidateWhere says where an operator can look at the candidate during the deploy.
func candidateWhere(s *config.Service) string {
	port := s.HTTPPort()
	if port == nil && len(s.Ports) > 0 {
		port = s.Ports[0]
	}
	switch {
	case port == nil:
		return ", no published port"
	case proxied(s) && port.Candidate == 0:
		return ", reached through the proxy"
	case proxied(s):
		return fmt.Sprintf("; the proxy shows it on 127.0.0.1:%d until the deploy ends", port.Candidate)
	case port.Candidate == 0:
		return " on 127.0.0.1:(a free port)"
	}
	return fmt.Sprintf(" on 127.0.0.1:%d", port.Candidate)
}

func hostPortList(s *config.Service) string {
	if len(s.Ports) == 0 {
		return "no published port"
	}
	var parts []string
	for _, p := range s.Ports {
		parts = append(parts, fmt.Sprintf(":%d", p.Host))
	}
	return strings.Join(parts, ", ")
}

func statusText(codes []int) string {
	if len(codes) == 0 {
		return "2xx"
	}
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprint(c))
	}
	return strings.Join(parts, " or ")
}

func dur(d time.Duration) string { return d.String() }

// shellWords shows a command the way a shell would need it typed.
func shellWords(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
