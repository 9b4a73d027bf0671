package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// releases is what a run does to a service's releases on the engine beside a deploy's own
// sequence: start one again (resume) or stop one, keep those an interrupted apply set aside,
// retire the old one after a cutover and prune beyond keep_releases, and adopt a container taken
// over as a release (takeover.go).
type releases struct{ rn *run }

// resume starts a live release that is not running (stopped by a crash, a reboot, or by hand)
// and health-checks it; then what an interrupted cutover left beside it is kept as previous
// releases. Until it is verified the release waits under its set-aside name (<name>-old-N,
// which the state reads as a live release set aside): it takes its live name back only once
// healthy, so an apply killed anywhere before that leaves it running under the other name, and
// the next plan health-checks it again (Change.Unverified) instead of calling it live.
func (rl *releases) resume(ctx context.Context, s *config.Service, cut cutover, how plan.CutoverPlan, st *plan.ServiceState, so *ServiceOutcome) error {
	rn := rl.rn
	live := st.Live
	aside := oldName(s, live.Release())
	// A restore starts the release again outside any plan: its own words then.
	own := fmt.Sprintf("start the stopped live release %d (%s)", live.Release(), live.Name)
	if live.Running() {
		own = fmt.Sprintf("health-check the live release %d (%s) again: an interrupted apply started it", live.Release(), live.Name)
	}
	err := rn.step(s.Name, plan.StepResume, "", rn.plannedOr(s.Name, plan.StepResume, own), func() error {
		// A container being taken over keeps its name: set aside, with no release of the
		// service recording it, the next plan would not know it (setAsideByTakeover). Under
		// its name, the next plan takes it over again, whether it runs or not.
		if live.Name != aside && !how.TakingOver() {
			if err := rn.Runtime.RenameContainer(ctx, live.ID, aside); err != nil {
				return err
			}
			live.Name = aside
		}
		rn.crash(plan.PointResumeAside)
		if !live.Running() {
			if how.ServedByProxy() {
				if err := rn.proxy.giveBackPorts(ctx, s, live.ID); err != nil {
					return err
				}
			}
			if err := rn.Runtime.StartContainer(ctx, live.ID); err != nil {
				return portHint(rn.own.addressHint(ctx, live.ID, err), s.Ports, false)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("start release %d: %w", live.Release(), err)
	}
	live.State = "running"
	rn.crash(plan.PointResumeStarted)
	if err := cut.resumed(ctx, live); err != nil {
		return fmt.Errorf("release %d was started but is not healthy: %w", live.Release(), err)
	}
	rn.crash(plan.PointResumeVerified)
	if live.Name == s.ContainerName {
		// taken over: it kept its name
	} else if err := rn.Runtime.RenameContainer(ctx, live.ID, s.ContainerName); err != nil {
		return fmt.Errorf("release %d is healthy but keeps the name %s (the next apply checks it again): %w", live.Release(), live.Name, err)
	}
	live.Name = s.ContainerName
	so.Release, so.ImageID = live.Release(), live.ImageID
	rl.tidy(ctx, s, st)
	return nil
}

// tidy keeps the containers an interrupted cutover set aside as previous releases.
func (rl *releases) tidy(ctx context.Context, s *config.Service, st *plan.ServiceState) {
	if len(st.Others) == 0 {
		return
	}
	for _, c := range st.Others {
		rl.keepOther(ctx, s, c.ID, fmt.Sprintf("keep %s (release %d) as a previous release", c.Name, c.Release()))
	}
	st.Others = nil
	rl.prune(context.WithoutCancel(ctx), s)
}

// keepOther keeps a container an interrupted cutover set aside as a previous release.
func (rl *releases) keepOther(ctx context.Context, s *config.Service, id, detail string) error {
	rn := rl.rn
	return rn.step(s.Name, plan.StepCleanup, "", detail, func() error {
		old, err := rn.Runtime.Inspect(ctx, id)
		if err != nil {
			return err
		}
		if old.Running {
			// Set aside by a cutover killed before its drain: what it has in flight finishes.
			rn.proxy.drainLeftover(ctx, s, id)
			rl.stopRelease(ctx, s, id, old.Name)
		}
		return rl.keepAsPrevious(context.WithoutCancel(ctx), s, old)
	})
}

// retire keeps the old live release as a stopped previous release (a new container: labels
// cannot change) and removes releases beyond keep_releases, with their images.
func (rl *releases) retire(ctx context.Context, s *config.Service, old *ContainerState) error {
	if old != nil {
		if err := rl.keepAsPrevious(ctx, s, old); err != nil {
			return err
		}
	}
	return rl.prune(ctx, s)
}

// keepAsPrevious recreates a release as a stopped previous release, and removes the original.
func (rl *releases) keepAsPrevious(ctx context.Context, s *config.Service, old *ContainerState) error {
	rn := rl.rn
	spec := old.Spec
	n, ok := engine.ParseRelease(spec.Labels[plan.LabelRelease])
	if !ok {
		return fmt.Errorf("keep %s as a previous release: its release label %q is not a release number; it stays as it is", old.Name, spec.Labels[plan.LabelRelease])
	}
	spec.Name = fmt.Sprintf("%s-r%d", s.ContainerName, n)
	spec.Labels = withRole(spec.Labels, plan.RolePrevious)
	spec.Restart = ""
	spec.Image = old.ImageID
	_, err := rn.Runtime.CreateContainer(ctx, spec)
	if errors.Is(err, ErrNameTaken) {
		// Kept already by a run a kill interrupted, or the name is someone else's: then the
		// original stays, since removing it would lose the release.
		if kept, ierr := rn.Runtime.Inspect(ctx, spec.Name); ierr != nil || kept.Spec.Labels[plan.LabelProject] != rn.Project.Name ||
			kept.Spec.Labels[plan.LabelService] != s.Name || kept.Spec.Labels[plan.LabelRelease] != strconv.Itoa(n) {
			return fmt.Errorf("keep release %d as previous: %w; %s stays as it is", n, rn.own.nameTaken(ctx, spec.Name, "service."+s.Name+"'s previous release"), old.Name)
		}
	} else if err != nil {
		return fmt.Errorf("keep release %d as previous: %w", n, err)
	}
	rn.crash(plan.PointCleanupKept)
	return rn.Runtime.RemoveContainer(ctx, old.ID)
}

// prune removes previous releases beyond keep_releases, oldest first, with the images the
// deployer made for them (an image that was on the engine before stays: the operator may have
// built it and have no registry to pull it back from).
func (rl *releases) prune(ctx context.Context, s *config.Service) error {
	rn := rl.rn
	obs, err := plan.Observe(ctx, rn.Runtime, rn.Project)
	if err != nil {
		return err
	}
	st := obs.Services[s.Name]
	if st == nil {
		return nil
	}
	for i, c := range st.Previous {
		if i < s.Deploy.KeepReleases {
			continue
		}
		if err := rn.Runtime.RemoveContainer(ctx, c.ID); err != nil {
			return err
		}
		if plan.ImageOwned(c) && (st.Live == nil || c.ImageID != st.Live.ImageID) && rl.imageMayGo(ctx, c) {
			rn.Runtime.RemoveImage(ctx, c.ImageID) // kept while another container uses it
		}
	}
	return nil
}

// imageMayGo reports whether the image of a pruned release is the project's to remove: one it
// pulled, or one it built, whose labels say so (those built before 2026-12 with the labels
// their containers inherit). A release's labels alone never make another's image removable.
func (rl *releases) imageMayGo(ctx context.Context, c *Container) bool {
	rn := rl.rn
	if c.Labels[plan.LabelImageOrigin] == plan.OriginPulled {
		return true
	}
	labels, err := rn.Runtime.ImageLabels(ctx, c.ImageID)
	return err == nil && plan.ImageOwner(labels)[plan.LabelProject] == rn.Project.Name
}

// Taking over what runs: operators come to the deployer with a service already running, made
// by their shell steps (`docker run`) or by `docker-compose up -d`, under the name the
// configuration gives it. The first apply replaces that container blue-green like a live
// release (its volumes backed up before cutover), and keeps it, recreated with the deployer's
// labels, as the previous release: `deployer rollback` returns to it.

// adoptedLabels are the labels a taken-over container gets when it is recreated as the previous
// release: the deployer's, without compose's (compose would take it back as its own).
func (rl *releases) adoptedLabels(s *config.Service, t *plan.Takeover, original map[string]string) map[string]string {
	rn := rl.rn
	l := map[string]string{}
	for k, v := range original {
		if !strings.HasPrefix(k, "com.docker.compose.") {
			l[k] = v
		}
	}
	doc, _ := json.Marshal(t.Doc)
	for k, v := range map[string]string{
		plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleLive, plan.LabelRelease: strconv.Itoa(t.Release),
		plan.LabelLiveName: s.ContainerName, plan.LabelImage: t.Image, plan.LabelImageOrigin: plan.OriginFound, plan.LabelTakenOver: t.Made,
		plan.LabelSpecDoc: string(doc), plan.LabelCreatedAt: time.Now().UTC().Format(time.RFC3339),
	} {
		l[k] = v
	}
	return l
}

// adopt returns the taken-over container as the service's live release, for the deploy that
// replaces it.
func (rl *releases) adopt(ctx context.Context, s *config.Service, t *plan.Takeover) (*plan.ServiceState, error) {
	rn := rl.rn
	st, err := rn.Runtime.Inspect(ctx, t.ID)
	if err != nil {
		return nil, fmt.Errorf("the container %s to take over: %w; run plan again", t.Name, err)
	}
	state := "exited"
	if st.Running {
		state = "running"
	}
	if t.Doc == nil {
		// A saved plan keeps no spec of the container (it holds its raw environment): it is read
		// again from the container being taken over.
		imageEnv, _ := rn.Runtime.ImageEnv(ctx, st.ImageID)
		t.Doc = plan.ForeignDoc(s, st, t.Image, imageEnv)
	}
	c := &Container{ID: st.ID, Name: st.Name, Image: t.Image, ImageID: st.ImageID, State: state, Labels: rl.adoptedLabels(s, t, st.Spec.Labels)}
	return &plan.ServiceState{Name: s.Name, Live: c}, nil
}

// keepSetAside keeps a taken-over container that an interrupted takeover left set aside as the
// previous release; one kept already goes.
func (rl *releases) keepSetAside(ctx context.Context, s *config.Service, t *plan.Takeover, detail string) error {
	rn := rl.rn
	return rn.step(s.Name, plan.StepCleanup, "", detail, func() error {
		if t.Kept {
			return rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), t.ID)
		}
		old, err := rn.Runtime.Inspect(ctx, t.ID)
		if err != nil {
			return err
		}
		if old.Running {
			rl.stopRelease(ctx, s, old.ID, old.Name)
		}
		old.Spec.Labels = rl.adoptedLabels(s, t, old.Spec.Labels)
		return rl.keepAsPrevious(context.WithoutCancel(ctx), s, old)
	})
}

// release is what a new live container is created from: the configuration (a deploy) or an
// earlier release's container (a rollback).
type release struct {
	number  int
	imageID string
	image   string
	cmd     []string
	env     map[string]string
	volumes []VolumeMount
	ports   []*config.Port
	labels  map[string]string
	network string
	// host settings: init, resources and log options, carried by every container of it.
	host ContainerSpec
	// origin says whether the deployer made the image (built or pulled it) or found it.
	origin string
}

// newRelease is the release a deploy makes of the configuration; its image and labels come
// with the image step.
func newRelease(p *config.Project, s *config.Service, number int) *release {
	r := &release{number: number, image: s.Image, cmd: s.Command, env: s.Env, ports: s.Ports, network: plan.NetworkName(p.Name), host: hostSettings(s)}
	for _, v := range s.Volumes {
		r.volumes = append(r.volumes, VolumeMount{Name: v.Name, Target: v.Target})
	}
	return r
}

// earlierRelease is the release a rollback brings back, from its stopped container.
func earlierRelease(p *config.Project, s *config.Service, c *Container, prev *ContainerState) *release {
	r := &release{number: c.Release(), imageID: prev.ImageID, image: c.Image, cmd: prev.Spec.Cmd, env: prev.Spec.Env,
		volumes: prev.Spec.Volumes, ports: s.Ports, labels: withRole(prev.Spec.Labels, plan.RoleCandidate), network: plan.NetworkName(p.Name),
		host: ContainerSpec{Init: prev.Spec.Init, Memory: prev.Spec.Memory, NanoCPUs: prev.Spec.NanoCPUs, LogOpts: prev.Spec.LogOpts}}
	r.labels[plan.LabelLiveName] = s.ContainerName
	r.labels[plan.LabelCreatedAt] = time.Now().UTC().Format(time.RFC3339)
	return r
}

// hostSettings are the service's init, resources and log options as a release carries them.
func hostSettings(s *config.Service) ContainerSpec {
	h := ContainerSpec{Init: s.Init}
	if r := s.Resources; r != nil {
		h.Memory, h.NanoCPUs = r.Memory, int64(r.CPUs*1e9)
	}
	if l := s.Log; l != nil {
		h.LogOpts = map[string]string{}
		if l.MaxSize != "" {
			h.LogOpts["max-size"] = l.MaxSize
		}
		if l.MaxFiles > 0 {
			h.LogOpts["max-file"] = strconv.Itoa(l.MaxFiles)
		}
	}
	return h
}

// labels are what a new release's containers record of it.
func (rn *run) labels(s *config.Service, role string, number int, doc map[string]string, imageID, contextHash, origin string) map[string]string {
	raw, _ := json.Marshal(doc)
	l := map[string]string{
		plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: role, plan.LabelRelease: strconv.Itoa(number),
		plan.LabelSpecDoc: string(raw), plan.LabelSpec: plan.SpecHash(doc, imageID), plan.LabelCreatedAt: time.Now().UTC().Format(time.RFC3339),
		plan.LabelImage: s.Image, plan.LabelLiveName: s.ContainerName,
	}
	if contextHash != "" {
		l[plan.LabelContextHash] = contextHash
	}
	if origin != "" {
		l[plan.LabelImageOrigin] = origin
	}
	if rn.Source != "" {
		l[plan.LabelSource] = rn.Source
	}
	if rn.engine != "" {
		engines := map[string]string{}
		for _, e := range s.EngineNames() {
			engines[e] = rn.Project.Docker.Host
			if eb := rn.Project.Engines[e]; eb != nil {
				engines[e] = eb.Host
			}
		}
		raw, _ := json.Marshal(engines)
		l[plan.LabelEngines] = string(raw)
	}
	return l
}

func withRole(labels map[string]string, role string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		out[k] = v
	}
	out[plan.LabelRole] = role
	return out
}

// spec is the container of the release: the candidate (ports on 127.0.0.1) or the live one.
func (r *release) spec(name, role string, candidate bool) ContainerSpec {
	cs := ContainerSpec{Name: name, Image: r.imageID, Cmd: r.cmd, Env: r.env, Volumes: r.volumes, Labels: withRole(r.labels, role), Network: r.network,
		Init: r.host.Init, Memory: r.host.Memory, NanoCPUs: r.host.NanoCPUs, LogOpts: r.host.LogOpts}
	for _, p := range r.ports {
		if candidate {
			cs.Ports = append(cs.Ports, PortBinding{Container: p.Container, HostIP: "127.0.0.1", HostPort: p.Candidate})
		} else {
			cs.Ports = append(cs.Ports, PortBinding{Container: p.Container, HostPort: p.Host})
		}
	}
	if role == plan.RoleLive {
		cs.Restart = "unless-stopped"
	}
	return cs
}
