package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/deployer-dev/deployer/config"
)

// Whose a name is. The deployer derives the name of everything it makes on an engine from the
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

// RoleData labels a service's volume the deployer created; LabelShared on it says the project
// that made it lets other projects mount it (its volume block says shared = true).
const (
	RoleData    = "data"
	LabelShared = "deployer.shared"
)

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
	switch labels[LabelProject] {
	case "":
		return c.found
	case project:
		return (c.service == "" || labels[LabelService] == c.service) && (c.role == "" || labels[LabelRole] == c.role)
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
			claim{kind: kindContainer, name: ProxyName(p.Name) + proxyNextSuffix, what: "the project's proxy during an upgrade", role: RoleProxy},
			claim{kind: kindVolume, name: proxyStateVolume(p), what: "the project's proxy's routes", found: true})
	}
	for _, s := range services {
		c, h, svc := s.ContainerName, p.Name+"-"+s.Name, "service."+s.Name
		out = append(out,
			claim{kind: kindContainer, name: c, what: svc + "'s live release", service: s.Name, found: true},
			claim{kind: kindContainer, name: c + candidateSuffix, what: svc + "'s candidate", service: s.Name},
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
				claim{kind: kindVolume, name: migrationScratch(p, s), what: svc + "'s migration dry-run volume", service: s.Name, role: RoleScratch},
				claim{kind: kindVolume, name: safetyVolume(p, s), what: svc + "'s safety copy", service: s.Name, role: RoleSafety})
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

func proxyStateVolume(p *config.Project) string { return ProxyName(p.Name) + "-state" }

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

// ownership checks, before anything changes, that every name the deployer would use for the
// services (and the project) is free or the project's own, and that every volume they mount is
// theirs to use. all is every container on the engine.
type ownership struct {
	ctx   context.Context
	eng   Engine
	p     *config.Project
	all   []Container
	proxy bool // the project needs its proxy on this engine
}

// check returns an error naming every name that is taken, and by what, and every role of the
// project that several containers claim.
func (o *ownership) check(services []*config.Service) error {
	cl := claims(o.p, services, o.proxy)
	problems := configCollisions(o.p, cl)
	obs := observe(o.p, o.all)
	problems = append(problems, obs.conflicts...)
	ignored := map[string]string{}
	for _, ig := range obs.Ignored {
		ignored[ig.ID] = ig.Reason
	}
	for _, c := range o.all {
		for _, want := range cl {
			if want.kind != kindContainer || !want.matches(c.Name) {
				continue
			}
			switch why, isIgnored := ignored[c.ID]; {
			case isIgnored:
				// Labelled for the project, and not what the name is for: not its own to remove.
				problems = append(problems, fmt.Sprintf("the container name %s (%s) is taken by a container labelled for this project that is not it: %s", c.Name, want.what, why))
			case c.Labels[LabelProject] == "" && want.family != nil && want.found && !obs.setAsideByTakeover(c):
				problems = append(problems, fmt.Sprintf("the container name %s (%s) is taken by %s, and no interrupted takeover of the deployer set it aside: rename it back to %s to take it over, or remove or rename it", c.Name, want.what, whose(c), strings.TrimSuffix(want.name, "-old-N")))
			case !want.ours(o.p.Name, c.Labels):
				problems = append(problems, fmt.Sprintf("the container name %s (%s) is taken by %s", c.Name, want.what, whose(c)))
			}
		}
	}
	for _, want := range cl {
		p, err := o.object(want)
		if err != nil {
			return err
		}
		if p != "" {
			problems = append(problems, p)
		}
	}
	for _, s := range services {
		for _, v := range s.Volumes {
			vol, err := o.eng.InspectVolume(o.ctx, v.Name)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if p := volumeProblem(o.p, s, v, vol, o.all, obs); p != "" {
				problems = append(problems, p)
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return fmt.Errorf("project %q: %s; nothing was changed. An object is the project's when it bears a name the project derives and labels that agree (deployer.project, deployer.service, the role and release the name is for): remove or rename what holds the name, or rename the project, the service or its container_name", o.p.Name, strings.Join(dedupe(problems), "; "))
}

// object checks the volume, network or image a claim names.
func (o *ownership) object(want claim) (string, error) {
	var labels map[string]string
	var err error
	switch want.kind {
	case kindVolume:
		var v *Volume
		if v, err = o.eng.InspectVolume(o.ctx, want.name); err == nil {
			labels = v.Labels
		}
	case kindNetwork:
		labels, err = o.eng.NetworkLabels(o.ctx, want.name)
	case kindImage:
		if labels, err = o.eng.ImageLabels(o.ctx, want.name); err == nil {
			labels = imageOwner(labels)
		}
	default:
		return "", nil
	}
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !want.ours(o.p.Name, labels) {
		fix := ""
		if want.kind == kindImage {
			// The image name is the configuration's own choice (image = ...): change it.
			fix = ": give this project's build another image name (image = ...)"
		}
		return fmt.Sprintf("the %s name %s (%s) is taken by %s %s%s", want.kind, want.name, want.what, article(want.kind), whoseLabels(labels), fix), nil
	}
	if want.kind == kindVolume {
		for _, c := range o.all {
			if c.Labels[LabelProject] != o.p.Name && contains(c.Mounts, want.name) {
				return fmt.Sprintf("the volume %s (%s) is mounted by %s", want.name, want.what, whose(c)), nil
			}
		}
	}
	return "", nil
}

// imageOwner reads whose an image is as the labels of containers say it: the deployer labels
// the images it builds deployer.image-project and -service; those it built before 2026-12
// carry deployer.project and deployer.service (which their containers inherit).
func imageOwner(labels map[string]string) map[string]string {
	if labels[LabelImageProject] == "" {
		return labels
	}
	return map[string]string{LabelProject: labels[LabelImageProject], LabelService: labels[LabelImageService]}
}

// article is "a" or "an" before a kind of object.
func article(kind string) string {
	if strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}

// setAsideByTakeover reports whether a container the deployer did not make, bearing a
// set-aside name (<name>-old-N), is the one an interrupted takeover set aside: a release of the
// service recorded its ID when it was made to replace it (LabelTakeoverOf), and its name says
// the release before that one.
func (o *Observed) setAsideByTakeover(c Container) bool {
	for _, st := range o.Services {
		if by := st.takeoverBy(c.ID); by != nil && c.Labels[LabelProject] == "" && strings.HasSuffix(c.Name, fmt.Sprintf("-old-%d", by.Release()-1)) {
			return true
		}
	}
	return false
}

// volumeProblem says why service s may not mount volume v of the engine (vol, nil when it
// does not exist yet), "" when it may. A volume is another project's when it is labelled for
// it or one of its containers mounts it: refused unless both declare it shared. A container
// the deployer did not make that mounts it makes it refused too, unless the configuration
// declares it shared, or the container is the one a service of the project takes over.
func volumeProblem(p *config.Project, s *config.Service, v *config.Volume, vol *Volume, all []Container, obs *Observed) string {
	ref := fmt.Sprintf("the volume %s (mounted by service.%s)", v.Name, s.Name)
	var labels map[string]string
	if vol != nil {
		labels = vol.Labels
	}
	switch owner := labels[LabelProject]; {
	case owner == p.Name && labels[LabelRole] != "" && labels[LabelRole] != RoleData:
		return fmt.Sprintf("%s is one the deployer made for itself, %s: rename the service's volume", ref, whoseLabels(labels))
	case owner != "" && owner != p.Name && !(v.Shared && consents(owner, v.Name, labels, all)):
		return fmt.Sprintf("%s is %s%s", ref, whoseLabels(labels), sharedHint(v, owner))
	}
	for _, c := range all {
		if !contains(c.Mounts, v.Name) {
			continue
		}
		owner, who := c.Labels[LabelProject], whose(c)
		if owner == p.Name && !obs.own(c.ID) {
			// Labelled for the project, but none of its own: as if made without the deployer.
			owner, who = "", obs.notOwn(c)
		}
		switch {
		case owner == p.Name:
		case owner == "" && takenOver(p, c, obs):
		case owner == "" && v.Shared:
		case owner == "":
			return fmt.Sprintf("%s is in use by %s: set shared = true in the volume block if it is meant to be shared with it", ref, who)
		case !(v.Shared && consents(owner, v.Name, labels, all)):
			return fmt.Sprintf("%s is in use by %s%s", ref, whose(c), sharedHint(v, owner))
		}
	}
	return ""
}

func sharedHint(v *config.Volume, owner string) string {
	if v.Shared {
		return fmt.Sprintf(", and project %q does not declare it shared (shared = true in its volume block)", owner)
	}
	return fmt.Sprintf(": a volume holds one project's data; if both projects mean to share it, set shared = true in the volume %q block of both", v.Name)
}

// consents reports whether another project declares a volume shared: its live releases that
// mount it all say so in their spec (the current configuration), else any release of it that
// mounts it does, else (nothing of it mounts the volume) the volume's labels do if it made it.
func consents(project, volume string, labels map[string]string, all []Container) bool {
	var live, other []bool
	for _, c := range all {
		if c.Labels[LabelProject] != project || !contains(c.Mounts, volume) || c.Labels[LabelSpecDoc] == "" {
			continue
		}
		var doc map[string]string
		json.Unmarshal([]byte(c.Labels[LabelSpecDoc]), &doc)
		shared := doc[config.VolumeAttr(volume, config.VolumeShared)] == "true"
		if isLive(c) {
			live = append(live, shared)
		} else {
			other = append(other, shared)
		}
	}
	switch {
	case len(live) > 0:
		return !slices.Contains(live, false)
	case len(other) > 0:
		return slices.Contains(other, true)
	}
	return labels[LabelProject] == project && labels[LabelShared] == "true"
}

// own reports whether a container is one of the project's own (not merely labelled for it).
func (o *Observed) own(id string) bool {
	for _, c := range o.All {
		if c.ID == id {
			return true
		}
	}
	return false
}

// notOwn names a container labelled for the project that is none of its own, saying why.
func (o *Observed) notOwn(c Container) string {
	for _, ig := range o.Ignored {
		if ig.ID == c.ID {
			return fmt.Sprintf("container %s (labelled for this project, but none of its own: %s)", c.Name, strings.TrimPrefix(ig.Reason, c.Name+" "))
		}
	}
	return fmt.Sprintf("container %s (labelled for this project, but none of its own)", c.Name)
}

// takenOver reports whether a container the deployer did not make is one that a service of
// the project takes over: it bears the service's container_name, or an interrupted takeover
// set it aside (setAsideByTakeover).
func takenOver(p *config.Project, c Container, obs *Observed) bool {
	for _, s := range p.Services {
		if c.Name == s.ContainerName {
			return true
		}
	}
	return obs.setAsideByTakeover(c)
}

// whose names what holds a container name, by its labels.
func whose(c Container) string {
	l := c.Labels
	switch {
	case l[LabelProject] == "":
		return describeOwner(c) + ", not made by the deployer"
	case c.Role() == RoleLock:
		return fmt.Sprintf("project %q's deploy lock (container %s, held by %s)", l[LabelProject], c.Name, orUnknown(l[LabelHolder]))
	case l[LabelService] == "" || c.Role() == RoleOneOff || c.Role() == RoleMigrated:
		return fmt.Sprintf("a container of project %q (%s, role %q)", l[LabelProject], c.Name, c.Role())
	case l[LabelRelease] == "":
		return fmt.Sprintf("project %q's service.%s (container %s)", l[LabelProject], l[LabelService], c.Name)
	}
	return describeOwner(c)
}

// whoseLabels says whose a volume, network or image is by its labels: "labelled for project
// "x" (service.web, role "data")", or "not made by the deployer".
func whoseLabels(labels map[string]string) string {
	owner := labels[LabelProject]
	if owner == "" {
		return "not made by the deployer"
	}
	var more []string
	if s := labels[LabelService]; s != "" {
		more = append(more, "service."+s)
	}
	if r := labels[LabelRole]; r != "" {
		more = append(more, fmt.Sprintf("role %q", r))
	}
	out := fmt.Sprintf("labelled for project %q", owner)
	if len(more) > 0 {
		out += " (" + strings.Join(more, ", ") + ")"
	}
	return out
}

// containerOwner is whose a container found by name is, from its inspected state.
func containerOwner(st *ContainerState) string {
	return whose(Container{ID: st.ID, Name: st.Name, Image: st.Spec.Image, Labels: st.Spec.Labels})
}

// owned is what a run makes and checks of the project's own on the engine: the names it
// derives (taken by something else: stop), its volumes, and its network and the addresses on it.
type owned struct{ rn *run }

// nameTaken explains a creation the engine refused because the name is taken (a race with
// the checks before, or something the checks do not see): it names what holds it.
func (own *owned) nameTaken(ctx context.Context, name, what string) error {
	rn := own.rn
	holder := "something else"
	if st, err := rn.Runtime.Inspect(ctx, name); err == nil {
		holder = containerOwner(st)
	}
	return fmt.Errorf("the container name %s (%s) is taken by %s: remove or rename it", name, what, holder)
}

// needsProxy reports whether the project needs its proxy on an engine: a service routed
// through it, or checks that run from it (an engine that is not local).
func needsProxy(p *config.Project, local bool) bool {
	for _, s := range p.Services {
		if planCutover(s, local, false).needsProxy() {
			return true
		}
	}
	return false
}

// checkOwnership checks, in a run, that the names of the services given and the project's are
// its own (ownership.check), right before it changes anything.
func (own *owned) checkOwnership(ctx context.Context, services []*config.Service) error {
	rn := own.rn
	all, err := rn.Runtime.AllContainers(ctx)
	if err != nil {
		return err
	}
	o := &ownership{ctx: ctx, eng: rn.Runtime, p: rn.Project, all: all, proxy: needsProxy(rn.Project, !rn.remote())}
	return o.check(services)
}

// makeVolumes creates the services' volumes that do not exist yet, with the project's labels
// (and shared, as the configuration says), before any container mounts them: the engine
// would make them without. One that exists is kept as it is (ownership.check judged it).
func (own *owned) makeVolumes(ctx context.Context, services []*config.Service) error {
	rn := own.rn
	for _, s := range services {
		for _, v := range s.Volumes {
			if err := own.makeVolume(ctx, v.Name, dataLabels(rn.Project, v)); err != nil {
				return fmt.Errorf("service.%s: %w", s.Name, err)
			}
		}
	}
	return nil
}

// makeVolume creates a volume with labels unless one of the name exists.
func (own *owned) makeVolume(ctx context.Context, name string, labels map[string]string) error {
	rn := own.rn
	if _, err := rn.Runtime.InspectVolume(ctx, name); !errors.Is(err, ErrNotFound) {
		return err
	}
	err := rn.Runtime.CreateVolume(ctx, name, labels)
	if errors.Is(err, ErrNameTaken) {
		v, ierr := rn.Runtime.InspectVolume(ctx, name)
		if ierr == nil && v.Labels[LabelProject] == rn.Project.Name {
			return nil // made meanwhile by another run of the project
		}
		holder := "something else"
		if ierr == nil {
			holder = whoseLabels(v.Labels)
		}
		return fmt.Errorf("the volume %s was made meanwhile, %s: run plan again", name, holder)
	}
	return err
}

// dataLabels are the labels of a service's volume the deployer creates.
func dataLabels(p *config.Project, v *config.Volume) map[string]string {
	l := map[string]string{LabelProject: p.Name, LabelRole: RoleData}
	if v.Shared {
		l[LabelShared] = "true"
	}
	return l
}

// removeOwnVolume removes a volume the deployer made for a service (role: its scratch space, a
// safety copy) that an interrupted run left; one of that name that is not that (another
// project's, a service's, one the deployer did not make) is never removed: an error names it.
func (own *owned) removeOwnVolume(ctx context.Context, name, service, role string) error {
	rn := own.rn
	v, err := rn.Runtime.InspectVolume(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	l := v.Labels
	if l[LabelProject] != rn.Project.Name || l[LabelService] != service || l[LabelRole] != role {
		return fmt.Errorf("a volume named %s exists, %s, that is not service.%s's %s volume: it is left as it is; rename or remove it", name, whoseLabels(l), service, role)
	}
	return rn.Runtime.RemoveVolume(ctx, name)
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
func namesFor(p *config.Project, service string, c *Container) (serviceNames, string) {
	if s := p.Service(service); s != nil {
		return serviceNames{project: p.Name, service: s.Name, container: s.ContainerName, words: oneOffWords(s)[1:] /* without "migrated-" */, configured: true}, ""
	}
	if !serviceNameRE.MatchString(service) {
		return serviceNames{}, fmt.Sprintf("its service label %q is no service name", service)
	}
	name := c.Labels[LabelLiveName]
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
	case n.container + candidateSuffix:
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
	return ParseRelease(num)
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
func (n serviceNames) agrees(c *Container, kind nameKind, num int) string {
	l := c.Labels
	if !slices.Contains(roles[kind], c.Role()) {
		if c.Role() == "" {
			return "it has no role (a container run by hand from an image the deployer built before 2026-12 inherits its labels: it is left alone)"
		}
		return fmt.Sprintf("its name %s is for a container of the role %s, not %q", c.Name, strings.Join(roles[kind], " or "), c.Role())
	}
	if kind != nameHelper {
		rel, ok := ParseRelease(l[LabelRelease])
		switch {
		case !ok:
			return fmt.Sprintf("its release label %q is not a number from 1 to %d", l[LabelRelease], MaxRelease)
		case num != 0 && num != rel:
			return fmt.Sprintf("its name says release %d and its label %d", num, rel)
		}
	}
	if doc := l[LabelSpecDoc]; doc != "" {
		var m map[string]string
		if json.Unmarshal([]byte(doc), &m) != nil {
			return "its spec-doc label is not one the deployer writes"
		}
	}
	if a := l[LabelAddress]; a != "" {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Sprintf("its address label %q is no address", a)
		}
	}
	return ""
}

// notDerived says why a container labelled for a service is not one of its own by its name.
func (n serviceNames) notDerived(p *config.Project, c *Container) string {
	if !n.configured {
		return fmt.Sprintf("its name is none of those the container name %s it records gives", n.container)
	}
	hint := ""
	if ln := c.Labels[LabelLiveName]; ln != "" && ln != n.container && (c.Name == ln || strings.HasPrefix(c.Name, ln+"-")) {
		hint = fmt.Sprintf(" (made when the container_name was %q? the deployer follows no name but the configured one: to keep it as the service's, rename it to the name %s gives, as docker rename %s %s%s)", ln, n.container, c.Name, n.container, strings.TrimPrefix(c.Name, ln))
	}
	return fmt.Sprintf("its name is none of those service.%s's container_name %s gives%s", n.service, n.container, hint)
}
