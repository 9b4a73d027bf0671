package plan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// whose a name is. The deployer derives the name of everything it makes on an engine from the
// project's name and its services' (the lock, the proxy, the network, releases, one-off and
// helper containers, scratch volumes, built images), and the configuration names the volumes.
// Such names collide by construction: project "a" service "b-c" and project "a-b" service "c"
// both run a container "a-b-c"; project "x"'s candidate of service "web" is "x-web-green", the
// live container of its service "web-green"; anyone may name a volume "x-data". A name alone
// therefore never says whose an object is; nor do labels alone, which anyone who can use the
// engine writes as they please (and a container inherits its image's). A container is the
// project's (a release, its candidate, a one-off or helper container, the proxy, the lock) only
// when it bears the name the deployer derives for that and its labels agree with the name
// (serviceNames.agrees); anything else labelled for the project is ignored (state.go). An
// object whose deployer.project label is not the project's is never the project's, whatever
// its name. An object without the deployer's labels is the project's only where the deployer
// takes over what it finds: a container bearing a service's container_name (see takeover.go),
// an image tag the operator built by hand, a volume that nothing of anyone else mounts.
//
// Plan and apply (and rollback, backup and restore) check every name before anything changes:
// one held by anything else stops the run at once, naming what holds it, before anything is
// removed. The checks run again inside the deploy lock, since the engine may have changed since
// the plan; what is created after them and still collides (a race) fails on the engine's own
// refusal, which names the holder too.

// Kinds of object a name is given to: each kind has its own names on an engine.
const (
	kindContainer = "container"
	kindVolume    = "volume"
	kindNetwork   = "network"
	kindImage     = "image"
)

// claim is a name (or a family of numbered names) the deployer gives one kind of object of a
// project, and what may hold it.
type claim struct {
	kind    string
	name    string         // the name; for a family, an example of it
	family  *regexp.Regexp // every name of a numbered family (nil for one name)
	what    string         // what it is, for messages: "service.web's candidate"
	service string         // the service whose object it is ("" for the project's own)
	role    string         // the role label its holder must bear ("" for any)
	found   bool           // something the deployer did not make may hold it (a takeover)
}

func (c claim) matches(name string) bool {
	if c.family != nil {
		return c.family.MatchString(name)
	}
	return name == c.name
}

// ours reports whether an object with these labels may hold the claim's name.
func (c claim) ours(project string, labels map[string]string) bool {
	switch labels[engine.LabelProject] {
	case "":
		return c.found
	case project:
		return (c.service == "" || labels[engine.LabelService] == c.service) && (c.role == "" || labels[engine.LabelRole] == c.role)
	}
	return false
}

// family is the claim of every name C-<word>N of a service's container name, where each word
// ends as the name's number follows it: "r" (C-r3), "old-" (C-old-3).
func family(kind, containerName, what, service string, found bool, words ...string) claim {
	alt := make([]string, len(words))
	for i, w := range words {
		alt[i] = regexp.QuoteMeta(w)
	}
	re := regexp.MustCompile("^" + regexp.QuoteMeta(containerName) + "-(" + strings.Join(alt, "|") + ")[0-9]+$")
	return claim{kind: kind, name: containerName + "-" + words[0] + "N", family: re, what: what, service: service, found: found}
}

// Names of the deployer's helper containers for a service (helperSpec and its like): the
// project and service names, then the helper's.
var helperNames = []string{"snapshot", "schema", "clone", "safety", "put-back", "safety-source", "restore-source"}

// claims are the names the deployer gives the project's objects on an engine: the project's
// own (the proxy's only when it needs one there) and those of the services given.
func claims(p *config.Project, services []*config.Service, proxy bool) []claim {
	out := []claim{
		{kind: kindContainer, name: LockName(p.Name), what: "the project's deploy lock", role: RoleLock},
		{kind: kindNetwork, name: NetworkName(p.Name), what: "the project's network"},
		{kind: kindNetwork, name: NetworkName(p.Name) + "-subnet-probe", what: "the network the project's network is measured with"},
		{kind: kindVolume, name: p.Name + "-deployer-key", what: "the project's key"},
	}
	if proxy {
		out = append(out,
			claim{kind: kindContainer, name: ProxyName(p.Name), what: "the project's proxy", role: RoleProxy},
			claim{kind: kindContainer, name: ProxyName(p.Name) + ProxyNextSuffix, what: "the project's proxy during an upgrade", role: RoleProxy},
			claim{kind: kindVolume, name: ProxyStateVolume(p), what: "the project's proxy's routes", found: true})
	}
	for _, s := range services {
		c, h, svc := s.ContainerName, p.Name+"-"+s.Name, "service."+s.Name
		out = append(out,
			claim{kind: kindContainer, name: c, what: svc + "'s live release", service: s.Name, found: true},
			claim{kind: kindContainer, name: c + CandidateSuffix, what: svc + "'s candidate", service: s.Name},
			family(kindContainer, c, svc+"'s previous releases", s.Name, false, "r"),
			family(kindContainer, c, svc+"'s releases set aside by a cutover", s.Name, true, "old-"),
			family(kindContainer, c, svc+"'s one-off containers", s.Name, false, oneOffWords(s)...))
		for _, n := range helperNames {
			out = append(out, claim{kind: kindContainer, name: h + "-" + n, what: svc + "'s helper container", service: s.Name})
		}
		if s.Backup != nil {
			for _, v := range s.Backup.Volumes {
				out = append(out, claim{kind: kindContainer, name: h + "-restore-" + v, what: svc + "'s restore helper", service: s.Name})
			}
			out = append(out, claim{kind: kindVolume, name: h + "-snapshots", what: svc + "'s backup scratch volume", service: s.Name, role: RoleScratch})
		}
		if s.Migration != nil {
			out = append(out,
				claim{kind: kindVolume, name: MigrationScratch(p, s), what: svc + "'s migration dry-run volume", service: s.Name, role: RoleScratch},
				claim{kind: kindVolume, name: SafetyVolume(p, s), what: svc + "'s safety copy", service: s.Name, role: RoleSafety})
		}
		if s.Build != nil {
			// An image tag the operator built by hand is taken over; another project's is not.
			out = append(out, claim{kind: kindImage, name: s.Image, what: svc + "'s built image", found: true})
		}
	}
	return out
}

// oneOffWords are the words of a service's numbered one-off containers: hooks (checks.go), the
// seed, the migration and its dry-run, and the mark of a migration that ran.
func oneOffWords(s *config.Service) []string {
	words := []string{"migrated-", "migration-", "migration-dry-run-", "seed-"}
	for _, h := range s.Hooks {
		words = append(words, strings.ReplaceAll(h.When, "_", "-")+"-")
	}
	return words
}

func ProxyStateVolume(p *config.Project) string { return ProxyName(p.Name) + "-state" }

// configCollisions finds names the configuration derives twice for different objects of the
// same kind (service "a"'s candidate and service "a-green"'s live release; a service named
// "proxy" beside the project's proxy), and service volumes named as the deployer's own.
func configCollisions(p *config.Project, cl []claim) []string {
	var out []string
	for i, a := range cl {
		if a.family != nil {
			continue
		}
		for j, b := range cl {
			if i == j || a.kind != b.kind || a.kind == kindImage || a.what == b.what || !b.matches(a.name) || (b.family == nil && j < i) {
				continue
			}
			out = append(out, fmt.Sprintf("%s %s is both %s and %s: set another container_name, or rename the service", a.kind, a.name, a.what, b.what))
		}
	}
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			for _, c := range cl {
				if c.kind == kindVolume && c.matches(v.Name) {
					out = append(out, fmt.Sprintf("service.%s mounts a volume named %s, the name of %s: rename that volume", s.Name, v.Name, c.what))
				}
			}
		}
	}
	return out
}

// What a name the deployer derives for a service is given to.
type nameKind int

const (
	nameNone      nameKind = iota
	nameLive               // C, the container_name
	nameCandidate          // C-green (the candidate, and a migration's trial)
	namePrevious           // C-rN
	nameSetAside           // C-old-N: a live release a cutover set aside
	nameOneOff             // C-<word>N: hooks, the seed, a migration and its dry-run
	nameMigrated           // C-migrated-N: the mark of a migration that ran
	nameHelper             // <project>-<service>-<helper>
)

// serviceNameRE is the configuration's rule for service names (config validates it): a label
// that breaks it names no service of any configuration.
var serviceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// containerNameRE is the engine's rule for container names.
var containerNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// serviceNames are the names the deployer gives one service's containers.
type serviceNames struct {
	project, service string
	container        string   // C: the container_name
	words            []string // the one-off words (oneOffWords), without "migrated-"
	configured       bool     // from the configuration, not from what a release recorded
}

// namesFor derives the names of a service's containers: from the configuration, or for a
// service it no longer has, from the container name a release recorded (c's).
func namesFor(p *config.Project, service string, c *engine.Container) (serviceNames, string) {
	if s := p.Service(service); s != nil {
		return serviceNames{project: p.Name, service: s.Name, container: s.ContainerName, words: oneOffWords(s)[1:] /* without "migrated-" */, configured: true}, ""
	}
	if !serviceNameRE.MatchString(service) {
		return serviceNames{}, fmt.Sprintf("its service label %q is no service name", service)
	}
	name := c.Labels[engine.LabelLiveName]
	if name == "" {
		name = p.Name + "-" + service // the default container_name, for releases from before the label
	}
	if !containerNameRE.MatchString(name) {
		return serviceNames{}, fmt.Sprintf("its live-name label %q is no container name", name)
	}
	words := []string{"migration-", "migration-dry-run-", "seed-"}
	for _, h := range config.HookPoints {
		words = append(words, strings.ReplaceAll(h, "_", "-")+"-")
	}
	return serviceNames{project: p.Name, service: service, container: name, words: words}, ""
}

// kind says which of the service's names a container name is, and its number for a numbered one.
func (n serviceNames) kind(name string) (nameKind, int) {
	switch name {
	case n.container:
		return nameLive, 0
	case n.container + CandidateSuffix:
		return nameCandidate, 0
	}
	if rest, ok := strings.CutPrefix(name, n.container+"-"); ok {
		for _, k := range []struct {
			word string
			kind nameKind
		}{{"r", namePrevious}, {"old-", nameSetAside}, {"migrated-", nameMigrated}} {
			if num, ok := numbered(rest, k.word); ok {
				return k.kind, num
			}
		}
		for _, w := range n.words {
			if num, ok := numbered(rest, w); ok {
				return nameOneOff, num
			}
		}
	}
	if rest, ok := strings.CutPrefix(name, n.project+"-"+n.service+"-"); ok {
		if slices.Contains(helperNames, rest) || strings.HasPrefix(rest, "restore-") && len(rest) > len("restore-") {
			return nameHelper, 0
		}
	}
	return nameNone, 0
}

// numbered reads rest as word followed by a release number.
func numbered(rest, word string) (int, bool) {
	num, ok := strings.CutPrefix(rest, word)
	if !ok {
		return 0, false
	}
	return engine.ParseRelease(num)
}

// roles are the roles a container bearing each kind of name may have.
var roles = map[nameKind][]string{
	nameLive:      {RoleLive, RoleCandidate}, // a proxied release goes live as the candidate it was made as
	nameCandidate: {RoleCandidate},
	namePrevious:  {RolePrevious},
	nameSetAside:  {RoleLive, RoleCandidate},
	nameOneOff:    {RoleOneOff},
	nameMigrated:  {RoleMigrated},
	nameHelper:    {RoleOneOff},
}

// agrees says why a container's labels disagree with the service's name it bears, "" when they
// agree: the role its name is for, a release number (the one its name carries), and labels the
// deployer reads that are of its own form. The container name a release recorded (live-name)
// may differ: releases renamed by hand after container_name changed are the service's.
func (n serviceNames) agrees(c *engine.Container, kind nameKind, num int) string {
	l := c.Labels
	if !slices.Contains(roles[kind], c.Role()) {
		if c.Role() == "" {
			return "it has no role (a container run by hand from an image the deployer built before 2026-12 inherits its labels: it is left alone)"
		}
		return fmt.Sprintf("its name %s is for a container of the role %s, not %q", c.Name, strings.Join(roles[kind], " or "), c.Role())
	}
	if kind != nameHelper {
		rel, ok := engine.ParseRelease(l[engine.LabelRelease])
		switch {
		case !ok:
			return fmt.Sprintf("its release label %q is not a number from 1 to %d", l[engine.LabelRelease], engine.MaxRelease)
		case num != 0 && num != rel:
			return fmt.Sprintf("its name says release %d and its label %d", num, rel)
		}
	}
	if doc := l[engine.LabelSpecDoc]; doc != "" {
		var m map[string]string
		if json.Unmarshal([]byte(doc), &m) != nil {
			return "its spec-doc label is not one the deployer writes"
		}
	}
	if a := l[engine.LabelAddress]; a != "" {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Sprintf("its address label %q is no address", a)
		}
	}
	return ""
}

// notDerived says why a container labelled for a service is not one of its own by its name.
func (n serviceNames) notDerived(p *config.Project, c *engine.Container) string {
	if !n.configured {
		return fmt.Sprintf("its name is none of those the container name %s it records gives", n.container)
	}
	hint := ""
	if ln := c.Labels[engine.LabelLiveName]; ln != "" && ln != n.container && (c.Name == ln || strings.HasPrefix(c.Name, ln+"-")) {
		hint = fmt.Sprintf(" (made when the container_name was %q? the deployer follows no name but the configured one: to keep it as the service's, rename it to the name %s gives, as docker rename %s %s%s)", ln, n.container, c.Name, n.container, strings.TrimPrefix(c.Name, ln))
	}
	return fmt.Sprintf("its name is none of those service.%s's container_name %s gives%s", n.service, n.container, hint)
}

// CandidateSuffix names a release while it is the candidate, beside the live one.
const CandidateSuffix = "-green"

// MigrationScratch names the scratch volume of a service's dry-run.
func MigrationScratch(p *config.Project, s *config.Service) string {
	return p.Name + "-" + s.Name + "-migration"
}

// SafetyVolume names the safety copy of a held migration's database volume.
func SafetyVolume(p *config.Project, s *config.Service) string {
	return p.Name + "-" + s.Name + "-safety"
}

// LockName is the name of a project's deploy lock: a container, because the engine creates a
// container name exactly once, atomically, on any host.
func LockName(project string) string { return project + "-deployer-lock" }

// NetworkName is the project's private network: releases join it, the proxy reaches them on it.
func NetworkName(project string) string { return project + "-net" }

// ProxyName is the project's proxy container.
func ProxyName(project string) string { return project + "-proxy" }

// ProxyNextSuffix names the new proxy of an upgrade while the old one still bears the name.
const ProxyNextSuffix = "-next"

// CandidateRouteSuffix names the temporary route that shows a candidate on its fixed port.
const CandidateRouteSuffix = "@candidate"
