package plan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// Ownership checks, before anything changes, that every name the deployer would use for the
// services (and the project) is free or the project's own, and that every volume they mount is
// theirs to use. all is every container on the engine.
type Ownership struct {
	Ctx     context.Context
	Eng     engine.Engine
	Project *config.Project
	All     []engine.Container
	Proxy   bool // the project needs its proxy on this engine
}

// Check returns an error naming every name that is taken, and by what, and every role of the
// project that several containers claim.
func (o *Ownership) Check(services []*config.Service) error {
	cl := claims(o.Project, services, o.Proxy)
	problems := configCollisions(o.Project, cl)
	obs := observe(o.Project, o.All)
	problems = append(problems, obs.Conflicts...)
	ignored := map[string]string{}
	for _, ig := range obs.Ignored {
		ignored[ig.ID] = ig.Reason
	}
	for _, c := range o.All {
		for _, want := range cl {
			if want.kind != kindContainer || !want.matches(c.Name) {
				continue
			}
			switch why, isIgnored := ignored[c.ID]; {
			case isIgnored:
				// labelled for the project, and not what the name is for: not its own to remove.
				problems = append(problems, fmt.Sprintf("the container name %s (%s) is taken by a container labelled for this project that is not it: %s", c.Name, want.what, why))
			case c.Labels[engine.LabelProject] == "" && want.family != nil && want.found && !obs.setAsideByTakeover(c):
				problems = append(problems, fmt.Sprintf("the container name %s (%s) is taken by %s, and no interrupted takeover of the deployer set it aside: rename it back to %s to take it over, or remove or rename it", c.Name, want.what, Whose(c), strings.TrimSuffix(want.name, "-old-N")))
			case !want.ours(o.Project.Name, c.Labels):
				problems = append(problems, fmt.Sprintf("the container name %s (%s) is taken by %s", c.Name, want.what, Whose(c)))
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
			vol, err := o.Eng.InspectVolume(o.Ctx, v.Name)
			if err != nil && !errors.Is(err, engine.ErrNotFound) {
				return err
			}
			if p := volumeProblem(o.Project, s, v, vol, o.All, obs); p != "" {
				problems = append(problems, p)
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return fmt.Errorf("project %q: %s; nothing was changed. An object is the project's when it bears a name the project derives and labels that agree (deployer.project, deployer.service, the role and release the name is for): remove or rename what holds the name, or rename the project, the service or its container_name", o.Project.Name, strings.Join(dedupe(problems), "; "))
}

// object checks the volume, network or image a claim names.
func (o *Ownership) object(want claim) (string, error) {
	var labels map[string]string
	var err error
	switch want.kind {
	case kindVolume:
		var v *engine.Volume
		if v, err = o.Eng.InspectVolume(o.Ctx, want.name); err == nil {
			labels = v.Labels
		}
	case kindNetwork:
		labels, err = o.Eng.NetworkLabels(o.Ctx, want.name)
	case kindImage:
		if labels, err = o.Eng.ImageLabels(o.Ctx, want.name); err == nil {
			labels = ImageOwner(labels)
		}
	default:
		return "", nil
	}
	if errors.Is(err, engine.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !want.ours(o.Project.Name, labels) {
		fix := ""
		if want.kind == kindImage {
			// The image name is the configuration's own choice (image = ...): change it.
			fix = ": give this project's build another image name (image = ...)"
		}
		return fmt.Sprintf("the %s name %s (%s) is taken by %s %s%s", want.kind, want.name, want.what, article(want.kind), WhoseLabels(labels), fix), nil
	}
	if want.kind == kindVolume {
		for _, c := range o.All {
			if c.Labels[engine.LabelProject] != o.Project.Name && Contains(c.Mounts, want.name) {
				return fmt.Sprintf("the volume %s (%s) is mounted by %s", want.name, want.what, Whose(c)), nil
			}
		}
	}
	return "", nil
}

// ImageOwner reads whose an image is as the labels of containers say it: the deployer labels
// the images it builds deployer.image-project and -service; those it built before 2026-12
// carry deployer.project and deployer.service (which their containers inherit).
func ImageOwner(labels map[string]string) map[string]string {
	if labels[engine.LabelImageProject] == "" {
		return labels
	}
	return map[string]string{engine.LabelProject: labels[engine.LabelImageProject], engine.LabelService: labels[engine.LabelImageService]}
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
func (o *Observed) setAsideByTakeover(c engine.Container) bool {
	for _, st := range o.Services {
		if by := st.takeoverBy(c.ID); by != nil && c.Labels[engine.LabelProject] == "" && strings.HasSuffix(c.Name, fmt.Sprintf("-old-%d", by.Release()-1)) {
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
func volumeProblem(p *config.Project, s *config.Service, v *config.Volume, vol *engine.Volume, all []engine.Container, obs *Observed) string {
	ref := fmt.Sprintf("the volume %s (mounted by service.%s)", v.Name, s.Name)
	var labels map[string]string
	if vol != nil {
		labels = vol.Labels
	}
	switch owner := labels[engine.LabelProject]; {
	case owner == p.Name && labels[engine.LabelRole] != "" && labels[engine.LabelRole] != RoleData:
		return fmt.Sprintf("%s is one the deployer made for itself, %s: rename the service's volume", ref, WhoseLabels(labels))
	case owner != "" && owner != p.Name && !(v.Shared && consents(owner, v.Name, labels, all)):
		return fmt.Sprintf("%s is %s%s", ref, WhoseLabels(labels), sharedHint(v, owner))
	}
	for _, c := range all {
		if !Contains(c.Mounts, v.Name) {
			continue
		}
		owner, who := c.Labels[engine.LabelProject], Whose(c)
		if owner == p.Name && !obs.own(c.ID) {
			// labelled for the project, but none of its own: as if made without the deployer.
			owner, who = "", obs.notOwn(c)
		}
		switch {
		case owner == p.Name:
		case owner == "" && takenOver(p, c, obs):
		case owner == "" && v.Shared:
		case owner == "":
			return fmt.Sprintf("%s is in use by %s: set shared = true in the volume block if it is meant to be shared with it", ref, who)
		case !(v.Shared && consents(owner, v.Name, labels, all)):
			return fmt.Sprintf("%s is in use by %s%s", ref, Whose(c), sharedHint(v, owner))
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
func consents(project, volume string, labels map[string]string, all []engine.Container) bool {
	var live, other []bool
	for _, c := range all {
		if c.Labels[engine.LabelProject] != project || !Contains(c.Mounts, volume) || c.Labels[engine.LabelSpecDoc] == "" {
			continue
		}
		var doc map[string]string
		json.Unmarshal([]byte(c.Labels[engine.LabelSpecDoc]), &doc)
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
	return labels[engine.LabelProject] == project && labels[LabelShared] == "true"
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
func (o *Observed) notOwn(c engine.Container) string {
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
func takenOver(p *config.Project, c engine.Container, obs *Observed) bool {
	for _, s := range p.Services {
		if c.Name == s.ContainerName {
			return true
		}
	}
	return obs.setAsideByTakeover(c)
}

// Whose names what holds a container name, by its labels.
func Whose(c engine.Container) string {
	l := c.Labels
	switch {
	case l[engine.LabelProject] == "":
		return DescribeOwner(c) + ", not made by the deployer"
	case c.Role() == RoleLock:
		return fmt.Sprintf("project %q's deploy lock (container %s, held by %s)", l[engine.LabelProject], c.Name, OrUnknown(l[engine.LabelHolder]))
	case l[engine.LabelService] == "" || c.Role() == RoleOneOff || c.Role() == RoleMigrated:
		return fmt.Sprintf("a container of project %q (%s, role %q)", l[engine.LabelProject], c.Name, c.Role())
	case l[engine.LabelRelease] == "":
		return fmt.Sprintf("project %q's service.%s (container %s)", l[engine.LabelProject], l[engine.LabelService], c.Name)
	}
	return DescribeOwner(c)
}

// WhoseLabels says whose a volume, network or image is by its labels: "labelled for project
// "x" (service.web, role "data")", or "not made by the deployer".
func WhoseLabels(labels map[string]string) string {
	owner := labels[engine.LabelProject]
	if owner == "" {
		return "not made by the deployer"
	}
	var more []string
	if s := labels[engine.LabelService]; s != "" {
		more = append(more, "service."+s)
	}
	if r := labels[engine.LabelRole]; r != "" {
		more = append(more, fmt.Sprintf("role %q", r))
	}
	out := fmt.Sprintf("labelled for project %q", owner)
	if len(more) > 0 {
		out += " (" + strings.Join(more, ", ") + ")"
	}
	return out
}

// ContainerOwner is whose a container found by name is, from its inspected state.
func ContainerOwner(st *engine.ContainerState) string {
	return Whose(engine.Container{ID: st.ID, Name: st.Name, Image: st.Spec.Image, Labels: st.Spec.Labels})
}

// NeedsProxy reports whether the project needs its proxy on an engine: a service routed
// through it, or checks that run from it (an engine that is not local).
func NeedsProxy(p *config.Project, local bool) bool {
	for _, s := range p.Services {
		if PlanCutover(s, local, false).NeedsProxy() {
			return true
		}
	}
	return false
}

// DataLabels are the labels of a service's volume the deployer creates.
func DataLabels(p *config.Project, v *config.Volume) map[string]string {
	l := map[string]string{engine.LabelProject: p.Name, engine.LabelRole: RoleData}
	if v.Shared {
		l[LabelShared] = "true"
	}
	return l
}
