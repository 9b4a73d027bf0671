package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/notify"
	"github.com/deployer-dev/deployer/executor/probe"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// Applier carries out plans against one engine.
type Applier struct {
	Project *config.Project
	Runtime Runtime
	// Events receives every event, in order, from one goroutine at a time.
	Events func(Event)
	// Holder says who runs this apply, for the lock ("ci@runner-7 pid 4242").
	Holder      string
	LockTimeout time.Duration
	// Source is recorded on new releases (a git commit when known).
	Source string
	// ProbeHost is where published ports are reached: 127.0.0.1 for a local engine.
	ProbeHost string
	// Version is the deployer's version, recorded in backup manifests.
	Version string
	// SelfBinary is the deployer's own static Linux binary, from which the helper image for
	// restores is built (FROM scratch: no registry).
	SelfBinary string
	// TempDir holds backup spools and downloads; os.TempDir() when empty.
	TempDir string
	// IdentityFile is the age identity that decrypts encrypted backups, for verify and restore.
	IdentityFile string
	// KillAt makes the process kill itself (SIGKILL) when it reaches the named point; crash
	// tests use it to stop the deployer at every step. Empty in normal use.
	KillAt string

	red    *Redactor
	hasher *Hasher // the project's key, once read during this run
	// adopting are containers being taken over in this run (by ID): they are not on the
	// project's network and publish their ports themselves.
	adopting map[string]bool
	// portMoved are the services whose host port moved from the old release to the proxy in
	// this run: going back is a restart, not a route switch.
	portMoved map[string]bool
	proxyID   string // the project's proxy, once ensured during this run
	fixed     string // the project network's range of fixed addresses, once ensured ("" without)
	// helperID is the image the proxy and restores run in, once found or built during this run.
	helperID string
}

// ServiceOutcome is what apply did to one service.
type ServiceOutcome struct {
	Service      string  `json:"service"`
	Action       Action  `json:"action"`
	Release      int     `json:"release,omitempty"` // live after apply
	ImageID      string  `json:"image_id,omitempty"`
	Seconds      float64 `json:"seconds"`
	RolledBack   bool    `json:"rolled_back,omitempty"`
	RolledBackTo int     `json:"rolled_back_to,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// Outcome is what apply did.
type Outcome struct {
	Services []*ServiceOutcome `json:"services"`
}

// Failed reports whether any service failed or was rolled back.
func (o *Outcome) Failed() bool {
	for _, s := range o.Services {
		if s.Error != "" {
			return true
		}
	}
	return false
}

// Candidate names and timing.
const (
	candidateSuffix = "-green"
	// hookTimeout bounds one hook (a migration may take long, but not forever).
	hookTimeout = 30 * time.Minute
	// settle is how long a service without a health check must keep running to pass.
	settle   = 2 * time.Second
	logLines = 20
)

func (a *Applier) emit(e Event) {
	if a.Events == nil {
		return
	}
	e.FormatVersion = FormatVersion
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Detail = a.red.redact(e.Detail)
	a.Events(e)
}

func (a *Applier) warn(service, format string, args ...any) {
	a.emit(Event{Type: EventWarning, Service: service, Detail: fmt.Sprintf(format, args...)})
}

// step runs fn as one named step, reporting its start, end and duration.
func (a *Applier) step(service, name, detail string, fn func() error) error {
	a.crash(name)
	start := time.Now()
	a.emit(Event{Type: EventStep, Service: service, Step: name, Phase: "start", Detail: detail})
	err := fn()
	e := Event{Type: EventStep, Service: service, Step: name, Phase: "end", Outcome: OutcomeOK, Detail: detail, Seconds: time.Since(start).Seconds()}
	var skip skipped
	switch {
	case errors.As(err, &skip):
		e.Outcome, e.Detail, err = OutcomeSkipped, string(skip), nil
	case err != nil:
		e.Outcome, e.Detail = OutcomeFailed, err.Error()
	}
	a.emit(e)
	return err
}

// skipped ends a step as skipped, with the reason, without failing it.
type skipped string

func (s skipped) Error() string { return string(s) }

// crash kills the process at a named point when asked to (crash tests only).
func (a *Applier) crash(point string) {
	if a.KillAt != "" && a.KillAt == point {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never reached
	}
}

// Apply carries out the plan. It returns an error for failures outside one service (the lock,
// the engine); failures of services are in the Outcome, after the live release was kept or
// restored.
func (a *Applier) Apply(ctx context.Context, plan *Plan) (*Outcome, error) {
	a.red = newRedactor(a.Project)
	a.adopting, a.portMoved = map[string]bool{}, map[string]bool{}
	out := &Outcome{}
	if len(plan.Steps) == 0 {
		return out, nil
	}
	if err := a.Runtime.Ping(ctx); err != nil {
		return out, err
	}
	unlock, err := a.lock(ctx)
	if err != nil {
		return out, err
	}
	defer unlock()
	if err := a.readKey(ctx); err != nil {
		return out, err
	}
	// What holds the ports may have changed since the plan was made (a saved plan).
	var changing []string
	for _, ch := range plan.Changes {
		if ch.Action != ActionNone && ch.Action != ActionDelete {
			changing = append(changing, ch.Service)
		}
	}
	if err := checkPorts(ctx, a.Runtime, a.Project, changing); err != nil {
		return out, err
	}
	obs, err := Observe(ctx, a.Runtime, a.Project.Name)
	if err != nil {
		return out, err
	}
	if a.anyProxied() && (obs.Proxy != nil || hasLive(obs)) {
		// Restores a proxy that was killed, and the routes it had.
		if err := a.ensureProxy(ctx); err != nil {
			return out, err
		}
	}
	// A leftover candidate is removed first: the name is needed, and it was never live.
	for _, name := range obs.ServiceNames() {
		for _, c := range obs.Services[name].Candidates {
			c := c
			a.step(name, StepClean, fmt.Sprintf("remove the leftover candidate %s (release %d)", c.Name, c.Release()), func() error {
				return a.Runtime.RemoveContainer(context.WithoutCancel(ctx), c.ID)
			})
		}
	}
	for _, ch := range plan.Changes {
		// A container an interrupted takeover set aside becomes the previous release first.
		if t := ch.Takeover; t != nil && t.SetAside {
			a.keepSetAside(ctx, a.Project.Service(ch.Service), t)
		}
		// Releases an interrupted cutover set aside become previous releases first.
		if st := obs.Services[ch.Service]; st != nil && len(st.Others) > 0 && ch.Action != ActionDelete {
			a.tidy(ctx, a.Project.Service(ch.Service), st)
			st.Others = nil
		}
		if ch.Action == ActionNone {
			continue
		}
		so := &ServiceOutcome{Service: ch.Service, Action: ch.Action}
		out.Services = append(out.Services, so)
		start := time.Now()
		st := obs.Services[ch.Service]
		if st == nil {
			st = &ServiceState{Name: ch.Service}
		}
		var err error
		switch ch.Action {
		case ActionDelete:
			err = a.remove(ctx, ch, st)
		case ActionUpdate:
			s := a.Project.Service(ch.Service)
			err = a.resume(ctx, s, st, so)
			if err != nil && s.Deploy.AutoRollback && len(st.Previous) > 0 && ctx.Err() == nil {
				// The release that was live does not come back healthy: bring back the one
				// before it, through the same checks and cutover as deployer rollback.
				failed := st.Live.Release()
				if rerr := a.rollback(ctx, s, 0, so); rerr != nil {
					err = fmt.Errorf("%v; the rollback to an earlier release failed too: %v", err, rerr)
				} else {
					so.RolledBack, so.RolledBackTo = true, so.Release
					err = fmt.Errorf("rolled back to release %d: release %d did not come back healthy: %v", so.Release, failed, err)
				}
			}
		case ActionCreate, ActionReplace:
			err = a.deploy(ctx, a.Project.Service(ch.Service), ch, st, so)
		case ActionTakeover:
			s := a.Project.Service(ch.Service)
			if st, err = a.adopt(ctx, s, ch.Takeover); err == nil {
				a.adopting[st.Live.ID] = true
				err = a.deploy(ctx, s, ch, st, so)
			}
		}
		so.Seconds = time.Since(start).Seconds()
		if err != nil {
			so.Error = a.red.redact(err.Error())
		}
		a.emit(Event{Type: EventResult, Service: ch.Service, Outcome: outcomeOf(err), Detail: so.Error, Release: so.Release, RolledBack: so.RolledBack, Seconds: so.Seconds})
		if ctx.Err() != nil {
			break
		}
	}
	return out, nil
}

// readKey reads the project's key for hashing sensitive values into labels.
func (a *Applier) readKey(ctx context.Context) error {
	key, err := a.Runtime.ProjectKey(ctx, a.Project.Name)
	if err != nil {
		return err
	}
	a.hasher = NewHasher(key)
	return nil
}

func outcomeOf(err error) string {
	if err != nil {
		return OutcomeFailed
	}
	return OutcomeOK
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

func (a *Applier) labels(s *config.Service, role string, number int, doc map[string]string, imageID, contextHash, origin string) map[string]string {
	raw, _ := json.Marshal(doc)
	l := map[string]string{
		LabelProject: a.Project.Name, LabelService: s.Name, LabelRole: role, LabelRelease: strconv.Itoa(number),
		LabelSpecDoc: string(raw), LabelSpec: SpecHash(doc, imageID), LabelCreatedAt: time.Now().UTC().Format(time.RFC3339),
		LabelImage: s.Image, LabelLiveName: s.ContainerName,
	}
	if contextHash != "" {
		l[LabelContextHash] = contextHash
	}
	if origin != "" {
		l[LabelImageOrigin] = origin
	}
	if a.Source != "" {
		l[LabelSource] = a.Source
	}
	return l
}

func withRole(labels map[string]string, role string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		out[k] = v
	}
	out[LabelRole] = role
	return out
}

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
	if role == RoleLive {
		cs.Restart = "unless-stopped"
	}
	return cs
}

// deploy runs the blue-green sequence for one service: image, candidate, checks, backup,
// cutover, verify, clean-up.
func (a *Applier) deploy(ctx context.Context, s *config.Service, ch *Change, st *ServiceState, so *ServiceOutcome) error {
	svc := s.Name
	a.notify(ctx, "started", s, notify.Notice{Release: ch.NextRelease})
	fail := func(err error) error {
		a.notify(context.WithoutCancel(ctx), "failed", s, notify.Notice{Release: ch.NextRelease, Reason: err.Error()})
		return err
	}
	// A live release that is not running is started first: the service must not stay down
	// while the new release is prepared, nor if it fails.
	if st.Live != nil && !st.Live.Running() {
		if err := a.resume(ctx, s, st, so); err != nil {
			return fail(err)
		}
	}
	if err := a.ensureNetwork(ctx); err != nil {
		return fail(err)
	}
	if a.checksInside(s) {
		if err := a.ensureProxy(ctx); err != nil {
			return fail(err)
		}
	}
	r := &release{number: ch.NextRelease, image: s.Image, cmd: s.Command, env: s.Env, ports: s.Ports, network: NetworkName(a.Project.Name), host: hostSettings(s)}
	for _, v := range s.Volumes {
		r.volumes = append(r.volumes, VolumeMount{Name: v.Name, Target: v.Target})
	}
	contextHash := ""
	if err := a.image(ctx, s, ch, st, r, &contextHash); err != nil {
		return fail(err)
	}
	doc := SpecDoc(a.Project, s, a.hasher)
	r.labels = a.labels(s, RoleCandidate, r.number, doc, r.imageID, contextHash, r.origin)
	if st.Live != nil && st.Live.Labels[LabelSpec] == r.labels[LabelSpec] && st.Live.Running() {
		// The build produced the image that runs already, and nothing else changed.
		a.emit(Event{Type: EventLog, Service: svc, Detail: fmt.Sprintf("the new image is the live one (%s) and the spec is unchanged: nothing to deploy", short(r.imageID))})
		so.Release, so.ImageID = st.Live.Release(), r.imageID
		return nil
	}
	so.ImageID = r.imageID

	cand, err := a.candidate(ctx, s, r)
	if err != nil {
		return fail(err)
	}
	defer a.removeCandidateRoutes(context.WithoutCancel(ctx), s)
	removeCandidate := func() {
		a.Runtime.RemoveContainer(context.WithoutCancel(ctx), cand.ID)
	}
	if err := a.checks(ctx, s, r, cand, true); err != nil {
		removeCandidate()
		return fail(fmt.Errorf("%s; %s", err, a.stillServing(st)))
	}
	if s.Backup != nil && st.Live != nil {
		err := a.step(svc, StepBackup, fmt.Sprintf("back up %s of release %d to backup_store.%s", strings.Join(s.Backup.Volumes, ", "), st.Live.Release(), s.Backup.Store), func() error {
			_, err := a.takeBackup(ctx, s, st.Live, "before the cutover to release "+strconv.Itoa(r.number), s.Backup.Keep)
			return err
		})
		if err != nil {
			removeCandidate()
			return fail(fmt.Errorf("backup: %w; %s", err, a.stillServing(st)))
		}
	}
	if ctx.Err() != nil {
		removeCandidate()
		return fail(fmt.Errorf("interrupted before cutover; %s", a.stillServing(st)))
	}
	var old *ContainerState
	if st.Live != nil {
		old, err = a.Runtime.Inspect(ctx, st.Live.ID)
		if err != nil {
			removeCandidate()
			return fail(err)
		}
		if a.adopting[old.ID] {
			old.Spec.Labels = st.Live.Labels // kept as the previous release with the deployer's labels
		}
	}
	if err := a.switchAndVerify(ctx, s, r, old, cand, ch, so, fail); err != nil {
		return err
	}
	a.notify(ctx, "succeeded", s, notify.Notice{Release: r.number, LiveRelease: r.number, Image: s.Image + " (" + short(r.imageID) + ")"})
	return nil
}

// switchAndVerify cuts over to the candidate's release, verifies it, and either rolls back
// (auto_rollback) or retires the old release. It is the same for a deploy and a rollback.
func (a *Applier) switchAndVerify(ctx context.Context, s *config.Service, r *release, old, cand *ContainerState, ch *Change, so *ServiceOutcome, fail func(error) error) error {
	wctx := context.WithoutCancel(ctx) // once the switch starts, it finishes
	removeCandidate := func() { a.Runtime.RemoveContainer(wctx, cand.ID) }
	var liveID string
	if proxied(s) {
		if err := a.proxyCutover(wctx, s, r, old, cand, ch); err != nil {
			if old != nil {
				a.setRoutes(wctx, s, old)
			}
			removeCandidate()
			return fail(fmt.Errorf("cutover to release %d: %w; %s", r.number, err, a.stillServingOld(old)))
		}
		liveID = cand.ID
	} else {
		// The candidate shares the volumes: stop it before the new live release starts, so
		// that one copy of the new release writes to them.
		a.stopRelease(wctx, s, cand.ID, "the candidate")
		id, err := a.cutover(wctx, s, r, old, ch)
		if err != nil {
			removeCandidate()
			return fail(err)
		}
		liveID = id
	}
	so.Release = r.number
	verify := a.verify
	if proxied(s) {
		verify = a.proxyVerify
	}
	if err := verify(ctx, s, liveID); err != nil {
		if old == nil || !s.Deploy.AutoRollback {
			if !proxied(s) {
				removeCandidate()
			}
			so.Release = 0
			return fail(fmt.Errorf("release %d is live but failed verification: %w", r.number, err))
		}
		if !proxied(s) {
			removeCandidate()
		}
		return a.rollbackAfterCutover(wctx, s, r, liveID, old, so, err)
	}
	return a.step(s.Name, StepCleanup, fmt.Sprintf("retire the old release, keep %s", plural(s.Deploy.KeepReleases, "previous release")), func() error {
		if proxied(s) {
			if old != nil {
				if err := a.drain(wctx, s, old); err != nil {
					a.warn(s.Name, "drain: %v", err)
				}
				a.stopRelease(wctx, s, old.ID, "release "+old.Spec.Labels[LabelRelease])
			}
		} else {
			removeCandidate()
		}
		return a.retire(wctx, s, old)
	})
}

func (a *Applier) stillServingOld(old *ContainerState) string {
	if old == nil {
		return "nothing was live before, and nothing is live now"
	}
	return fmt.Sprintf("release %s (%s) is still live", old.Spec.Labels[LabelRelease], old.Name)
}

// stillServing says what runs after a failure before cutover.
func (a *Applier) stillServing(st *ServiceState) string {
	if st.Live == nil {
		return "nothing was live before, and nothing is live now"
	}
	return fmt.Sprintf("release %d (%s) is still live", st.Live.Release(), st.Live.Name)
}

// image builds, pulls or looks up the image and records its ID.
func (a *Applier) image(ctx context.Context, s *config.Service, ch *Change, st *ServiceState, r *release, contextHash *string) error {
	if s.Build == nil || ch.ImageID != "" {
		if ch.ImageID != "" {
			*contextHash = ch.ContextHash
			r.origin = OriginFound
			if s.Build != nil {
				r.origin = OriginBuilt // the live image, built from the same context
			} else if o := originOf(st, ch.ImageID); o != "" {
				r.origin = o // pulled by an earlier deploy
			}
			return a.step(s.Name, StepImage, fmt.Sprintf("use %s (%s)", s.Image, short(ch.ImageID)), func() error {
				// By ID: the tag may have moved since the plan was made.
				id, err := a.Runtime.ImageID(ctx, ch.ImageID)
				if errors.Is(err, ErrNotFound) {
					return fmt.Errorf("image %s (%s) is gone from the engine; run plan again", s.Image, short(ch.ImageID))
				}
				r.imageID = id
				return err
			})
		}
		r.origin = OriginPulled
		return a.step(s.Name, StepImage, "pull "+s.Image, func() error {
			id, err := a.Runtime.PullImage(ctx, s.Image, a.registries(), nil)
			r.imageID = id
			return err
		})
	}
	r.origin = OriginBuilt
	return a.step(s.Name, StepBuild, fmt.Sprintf("build %s", s.Image), func() error {
		dir := filepath.Join(a.Project.Dir, s.Build.Context)
		if len(s.Build.Before) > 0 {
			if err := a.runBefore(ctx, s); err != nil {
				return err
			}
		}
		hash, err := engine.ContextHash(dir, s.Build.Dockerfile)
		if err != nil {
			return err
		}
		*contextHash = hash
		if st.Live != nil && st.Live.Labels[LabelContextHash] == hash {
			if _, err := a.Runtime.ImageID(ctx, st.Live.ImageID); err == nil {
				r.imageID = st.Live.ImageID
				return skipped(fmt.Sprintf("build context unchanged (%s): using the live image %s", short(hash), short(r.imageID)))
			}
		}
		id, err := a.Runtime.BuildImage(ctx, BuildOptions{
			Dir: dir, Dockerfile: s.Build.Dockerfile, Tag: s.Image, Args: s.Build.Args,
			Labels: map[string]string{LabelProject: a.Project.Name, LabelService: s.Name, LabelContextHash: hash},
		}) // the builder's output is quiet; its last lines come with a failure
		r.imageID = id
		return err
	})
}

// runBefore runs build.before in the project directory, its output as log events.
func (a *Applier) runBefore(ctx context.Context, s *config.Service) error {
	cmd := exec.CommandContext(ctx, s.Build.Before[0], s.Build.Before[1:]...)
	cmd.Dir = a.Project.Dir
	w := &lineWriter{emit: func(l string) { a.emit(Event{Type: EventLog, Service: s.Name, Step: StepBuild, Detail: l}) }}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build.before `%s` in %s: %v (last output: %s)", a.red.words(s.Build.Before), a.Project.Dir, err, w.tail())
	}
	return nil
}

// candidate creates and starts <container_name>-green with the new release.
func (a *Applier) candidate(ctx context.Context, s *config.Service, r *release) (*ContainerState, error) {
	name := s.ContainerName + candidateSuffix
	var cand *ContainerState
	err := a.step(s.Name, StepCandidate, fmt.Sprintf("create and start %s (release %d)", name, r.number), func() error {
		spec := r.spec(name, RoleCandidate, true)
		if proxied(s) {
			// Published ports outlive the deploy on the container that becomes live: the
			// proxy shows the candidate on its port instead, for the deploy's length.
			spec.Ports = nil
		}
		id, err := a.createRelease(ctx, spec)
		if errors.Is(err, ErrNameTaken) {
			// Not ours to remove blindly: say what to do.
			return fmt.Errorf("a container named %s exists and is not a candidate of this project; remove or rename it", name)
		}
		if err != nil {
			return err
		}
		if err := a.Runtime.StartContainer(ctx, id); err != nil {
			a.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
			return portHint(err, r.ports, true)
		}
		cand, err = a.Runtime.Inspect(ctx, id)
		if err == nil && proxied(s) {
			a.setCandidateRoutes(ctx, s, cand)
		}
		return err
	})
	return cand, err
}

// portHint turns the engine's "port is already allocated" into what to do.
func portHint(err error, ports []*config.Port, candidate bool) error {
	msg := err.Error()
	if !strings.Contains(msg, "already allocated") && !strings.Contains(msg, "address already in use") {
		return err
	}
	which := "host"
	if candidate {
		which = "candidate"
	}
	var list []string
	for _, p := range ports {
		n := p.Host
		if candidate {
			n = p.Candidate
		}
		list = append(list, strconv.Itoa(n))
	}
	return fmt.Errorf("%s port %s is taken by another process or container: free it or choose another port (%v)", which, strings.Join(list, ", "), err)
}

// checks runs every check of the candidate: running, health, canaries, and for a new release
// the sqlite checks and hooks.
func (a *Applier) checks(ctx context.Context, s *config.Service, r *release, cand *ContainerState, newRelease bool) error {
	svc := s.Name
	alive := func() error { return a.alive(ctx, cand) }
	if err := a.step(svc, StepRunning, "the candidate keeps running", func() error {
		if s.HealthCheck != nil {
			return alive() // the health check keeps watching
		}
		return settled(ctx, alive)
	}); err != nil {
		return fmt.Errorf("candidate %q: %w", cand.Name, err)
	}
	port := s.HTTPPort()
	if h := s.HealthCheck; h != nil && port != nil {
		url := a.candidateURL(s, cand, port, h.Path)
		if err := a.step(svc, StepHealth, "GET "+url, func() error {
			c := probe.Check{URL: url, Status: h.Status, Timeout: h.Timeout}
			return probe.UntilWith(ctx, a.getter(s), c, h.Interval, h.Healthy, h.Deadline, alive)
		}); err != nil {
			return fmt.Errorf("candidate %q: health check GET %s: %w", cand.Name, h.Path, err)
		}
	}
	for _, c := range s.Canaries {
		url := a.candidateURL(s, cand, port, c.Path)
		check := probe.Check{URL: url, Status: c.Status, BodyContains: c.BodyContains, Timeout: 10 * time.Second}
		if err := a.step(svc, StepCanary+"."+c.Name, "GET "+url, func() error {
			if res := a.getter(s)(ctx, check); !check.OK(res) {
				return errors.New(check.Describe(res))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("candidate %q: canary %q GET %s: %w", cand.Name, c.Name, c.Path, err)
		}
	}
	if !newRelease {
		return nil // an earlier release already passed them, and its hooks must not run twice
	}
	for _, db := range s.SQLite {
		if err := a.step(svc, StepSQLite+"."+db.Name, db.Volume+"/"+db.Path, func() error {
			return a.checkSQLite(ctx, s, r, cand, db)
		}); err != nil {
			return fmt.Errorf("candidate %q: sqlite %q: %w", cand.Name, db.Name, err)
		}
	}
	for _, h := range s.Hooks {
		if err := a.step(svc, StepHook+"."+h.When, "run `"+a.red.words(h.Command)+"`", func() error {
			return a.oneOff(ctx, s, r, h.When, h.Command)
		}); err != nil {
			return fmt.Errorf("hook %q: %w", h.When, err)
		}
	}
	return nil
}

// alive fails with the exit code and last log lines when the container stopped.
func (a *Applier) alive(ctx context.Context, c *ContainerState) error {
	st, err := a.Runtime.Inspect(ctx, c.ID)
	if err != nil {
		return err
	}
	if st.Running && st.Restarts == 0 {
		return nil
	}
	logs, _ := a.Runtime.Logs(context.WithoutCancel(ctx), c.ID, logLines)
	why := fmt.Sprintf("exited with code %d", st.ExitCode)
	if st.Running {
		// The engine's restart policy brought it back; a crash is a failure all the same.
		why = fmt.Sprintf("crashed and was restarted by the engine (%s, last exit code %d)", plural(st.Restarts, "time"), st.ExitCode)
	}
	if st.OOM {
		why += " (out of memory)"
	}
	if st.Error != "" {
		why += ": " + st.Error
	}
	return fmt.Errorf("%s; last output:\n%s", why, indent(logs))
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// oneOff runs a command in a one-off container of the new image, with the service's env and
// volumes, and fails unless it exits 0.
func (a *Applier) oneOff(ctx context.Context, s *config.Service, r *release, what string, cmd []string) error {
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	spec := r.spec(fmt.Sprintf("%s-%s-%d", s.ContainerName, strings.ReplaceAll(what, "_", "-"), r.number), RoleOneOff, true)
	spec.Cmd, spec.Ports = cmd, nil
	id, err := a.Runtime.CreateContainer(ctx, spec)
	if errors.Is(err, ErrNameTaken) {
		return fmt.Errorf("a container named %s exists (left by an interrupted apply?): remove it", spec.Name)
	}
	if err != nil {
		return err
	}
	defer a.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
	if err := a.Runtime.StartContainer(ctx, id); err != nil {
		return err
	}
	code, err := a.Runtime.Wait(ctx, id)
	if err != nil {
		return err
	}
	logs, _ := a.Runtime.Logs(context.WithoutCancel(ctx), id, logLines)
	for _, l := range strings.Split(strings.TrimRight(logs, "\n"), "\n") {
		if l != "" {
			a.emit(Event{Type: EventLog, Service: s.Name, Step: StepHook + "." + what, Detail: l})
		}
	}
	if code != 0 {
		return fmt.Errorf("`%s` exited with code %d; last output:\n%s", a.red.words(cmd), code, indent(logs))
	}
	return nil
}

func (a *Applier) probeHost() string {
	if a.ProbeHost != "" {
		return a.ProbeHost
	}
	return "127.0.0.1"
}

// oldName is where the previous live container waits during a cutover, until it is retired.
func oldName(s *config.Service, release int) string {
	return fmt.Sprintf("%s-old-%d", s.ContainerName, release)
}

// cutover stops the old live release and starts the new one under the live name (restart
// mode). Each part is idempotent, so an apply interrupted here is finished by the next one.
func (a *Applier) cutover(ctx context.Context, s *config.Service, r *release, old *ContainerState, ch *Change) (string, error) {
	name, detail := StepCutover, fmt.Sprintf("restart: stop release %d, start release %d as %s", ch.LiveRelease, r.number, s.ContainerName)
	if old == nil {
		name, detail = StepStart, fmt.Sprintf("start release %d as %s", r.number, s.ContainerName)
	}
	if s.Deploy.Cutover == "proxy" && old != nil {
		detail += " (the proxy cutover is not available in this version: restarting instead, with a short window without service)"
	}
	var liveID string
	err := a.step(s.Name, name, detail, func() error {
		if old != nil {
			if err := a.stopRelease(ctx, s, old.ID, "release "+old.Spec.Labels[LabelRelease]); err != nil {
				return err
			}
			a.crash("cutover.stopped")
			if old.Name != oldName(s, ch.LiveRelease) {
				if err := a.Runtime.RenameContainer(ctx, old.ID, oldName(s, ch.LiveRelease)); err != nil {
					a.Runtime.StartContainer(ctx, old.ID)
					return err
				}
			}
			a.crash("cutover.renamed")
		}
		id, err := a.createRelease(ctx, r.spec(s.ContainerName, RoleLive, false))
		if err == nil {
			a.crash("cutover.created")
			err = a.Runtime.StartContainer(ctx, id)
			if err != nil {
				a.Runtime.RemoveContainer(ctx, id)
				err = portHint(err, r.ports, false)
			}
		}
		if err != nil {
			if old != nil {
				a.restore(ctx, s, old)
			}
			return err
		}
		liveID = id
		return nil
	})
	if err != nil && old != nil {
		return "", fmt.Errorf("cutover to release %d: %w; release %d (%s) was started again", r.number, err, ch.LiveRelease, s.ContainerName)
	}
	return liveID, err
}

// stopRelease stops a container of the service (SIGTERM, then SIGKILL after stop_timeout), and
// says so when it had to be killed: every stop of it then waits the whole stop_timeout, which
// is what a shell script as PID 1 does, since PID 1 ignores SIGTERM without a handler.
func (a *Applier) stopRelease(ctx context.Context, s *config.Service, id, what string) error {
	start := time.Now()
	if err := a.Runtime.StopContainer(ctx, id, s.Deploy.StopTimeout); err != nil {
		return err
	}
	if time.Since(start) < s.Deploy.StopTimeout {
		return nil
	}
	st, err := a.Runtime.Inspect(ctx, id)
	if err != nil || st.ExitCode != 137 {
		return nil
	}
	hint := fmt.Sprintf("set init = true on service.%s, so that an init process forwards the signal to it", s.Name)
	if st.Spec.Init {
		hint = "it runs under init already: make the app stop on SIGTERM, or raise deploy.stop_timeout"
	}
	a.warn(s.Name, "%s did not stop within stop_timeout (%s) and was killed: its main process does not stop on SIGTERM (a shell script running as PID 1 does not); %s", what, s.Deploy.StopTimeout, hint)
	return nil
}

// restore puts the old live release back under the live name and starts it.
func (a *Applier) restore(ctx context.Context, s *config.Service, old *ContainerState) error {
	if err := a.Runtime.RenameContainer(ctx, old.ID, s.ContainerName); err != nil && !strings.Contains(err.Error(), "same name") {
		return err
	}
	return a.Runtime.StartContainer(ctx, old.ID)
}

// verify health-checks the new live release through its host port.
func (a *Applier) verify(ctx context.Context, s *config.Service, liveID string) error {
	port := s.HTTPPort()
	return a.step(s.Name, StepVerify, "health-check the new live release through its host port", func() error {
		live := &ContainerState{ID: liveID, Name: s.ContainerName}
		alive := func() error { return a.alive(ctx, live) }
		if s.HealthCheck == nil || port == nil {
			return settled(ctx, alive)
		}
		h := s.HealthCheck
		host := a.probeHost()
		if a.checksInside(s) && a.proxyID != "" {
			host = "127.0.0.1" // the proxy has the host's network
		}
		url := fmt.Sprintf("http://%s:%d%s", host, port.Host, h.Path)
		c := probe.Check{URL: url, Status: h.Status, Timeout: h.Timeout}
		if err := probe.UntilWith(ctx, a.getter(s), c, h.Interval, h.Healthy, h.Deadline, alive); err != nil {
			return fmt.Errorf("health check GET %s: %w", url, err)
		}
		return nil
	})
}

// rollbackAfterCutover puts the previous release back after the new one failed verification.
func (a *Applier) rollbackAfterCutover(ctx context.Context, s *config.Service, r *release, liveID string, old *ContainerState, so *ServiceOutcome, cause error) error {
	prev := old.Spec.Labels[LabelRelease]
	var logs string
	err := a.step(s.Name, "rollback", fmt.Sprintf("switch back from release %d to release %s", r.number, prev), func() error {
		logs, _ = a.Runtime.Logs(ctx, liveID, logLines)
		if proxied(s) && a.portMoved[s.Name] {
			// The old release had the host port, and gave it to the proxy in this apply: it
			// gets it back, as in a restart.
			for _, p := range s.Ports {
				a.ctl(ctx, proxy.Request{Op: "remove", Name: routeName(s, p)})
			}
			a.Runtime.RemoveContainer(ctx, liveID)
			if err := a.restore(ctx, s, old); err != nil {
				return err
			}
			return a.verify(ctx, s, old.ID)
		}
		if proxied(s) {
			// The old release still runs (it drains only after verification): route back to it.
			if _, err := a.setRoutes(ctx, s, old); err != nil {
				return err
			}
			failed, _ := a.Runtime.Inspect(ctx, liveID)
			if failed != nil {
				a.drain(ctx, s, failed)
			}
			a.Runtime.RemoveContainer(ctx, liveID)
			if err := a.Runtime.RenameContainer(ctx, old.ID, s.ContainerName); err != nil && !strings.Contains(err.Error(), "same name") {
				return err
			}
			return a.proxyVerify(ctx, s, old.ID)
		}
		a.stopRelease(ctx, s, liveID, fmt.Sprintf("release %d", r.number))
		if err := a.Runtime.RemoveContainer(ctx, liveID); err != nil {
			return err
		}
		if err := a.restore(ctx, s, old); err != nil {
			return err
		}
		return a.verify(ctx, s, old.ID)
	})
	so.RolledBack = true
	reason := fmt.Sprintf("release %d failed after cutover: %v", r.number, cause)
	if strings.TrimSpace(logs) != "" {
		reason += "; its last output:\n" + indent(logs)
	}
	if err != nil {
		so.Release = 0
		msg := fmt.Errorf("%s; the rollback to release %s failed too: %v. Nothing may be serving: run `docker start %s` or `deployer rollback service.%s`", reason, prev, err, old.ID[:12], s.Name)
		a.notify(ctx, "failed", s, notify.Notice{Release: r.number, Reason: msg.Error()})
		return msg
	}
	n, _ := strconv.Atoi(prev)
	so.Release, so.RolledBackTo = n, n
	a.notify(ctx, "rolled_back", s, notify.Notice{Release: r.number, LiveRelease: n, Reason: reason})
	return fmt.Errorf("rolled back to release %s: %s", prev, reason)
}

// retire keeps the old live release as a stopped previous release (a new container: labels
// cannot change) and removes releases beyond keep_releases, with their images.
func (a *Applier) retire(ctx context.Context, s *config.Service, old *ContainerState) error {
	if old != nil {
		if err := a.keepAsPrevious(ctx, s, old); err != nil {
			return err
		}
	}
	return a.prune(ctx, s)
}

// prune removes previous releases beyond keep_releases, oldest first, with the images the
// deployer made for them (an image that was on the engine before stays: the operator may have
// built it and have no registry to pull it back from).
func (a *Applier) prune(ctx context.Context, s *config.Service) error {
	obs, err := Observe(ctx, a.Runtime, a.Project.Name)
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
		if err := a.Runtime.RemoveContainer(ctx, c.ID); err != nil {
			return err
		}
		if imageOwned(c) && (st.Live == nil || c.ImageID != st.Live.ImageID) {
			a.Runtime.RemoveImage(ctx, c.ImageID) // kept while another container uses it
		}
	}
	return nil
}

func (a *Applier) keepAsPrevious(ctx context.Context, s *config.Service, old *ContainerState) error {
	spec := old.Spec
	n, _ := strconv.Atoi(spec.Labels[LabelRelease])
	spec.Name = fmt.Sprintf("%s-r%d", s.ContainerName, n)
	spec.Labels = withRole(spec.Labels, RolePrevious)
	spec.Restart = ""
	spec.Image = old.ImageID
	if _, err := a.Runtime.CreateContainer(ctx, spec); err != nil && !errors.Is(err, ErrNameTaken) {
		return fmt.Errorf("keep release %d as previous: %w", n, err)
	}
	a.crash("cleanup.kept")
	return a.Runtime.RemoveContainer(ctx, old.ID)
}

// tidy converts extra containers left by an interrupted cutover into previous releases.
func (a *Applier) tidy(ctx context.Context, s *config.Service, st *ServiceState) {
	if len(st.Others) == 0 {
		return
	}
	defer a.prune(context.WithoutCancel(ctx), s)
	for _, c := range st.Others {
		c := c
		a.step(s.Name, StepCleanup, fmt.Sprintf("keep %s (release %d) as a previous release", c.Name, c.Release()), func() error {
			old, err := a.Runtime.Inspect(ctx, c.ID)
			if err != nil {
				return err
			}
			if old.Running {
				a.stopRelease(ctx, s, c.ID, c.Name)
			}
			return a.keepAsPrevious(context.WithoutCancel(ctx), s, old)
		})
	}
}

// resume starts a live release that is not running (stopped by a crash, a reboot, or by hand)
// and health-checks it.
func (a *Applier) resume(ctx context.Context, s *config.Service, st *ServiceState, so *ServiceOutcome) error {
	live := st.Live
	err := a.step(s.Name, StepResume, fmt.Sprintf("start the stopped live release %d (%s)", live.Release(), live.Name), func() error {
		if live.Name != s.ContainerName {
			if err := a.Runtime.RenameContainer(ctx, live.ID, s.ContainerName); err != nil {
				return err
			}
		}
		if err := a.Runtime.StartContainer(ctx, live.ID); err != nil {
			return portHint(err, s.Ports, false)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("start release %d: %w", live.Release(), err)
	}
	verify := a.verify
	if proxied(s) && !a.adopting[live.ID] {
		// Its address may have changed with the restart: the routes follow it.
		a.proxyID = ""
		if err := a.ensureProxy(ctx); err != nil {
			return err
		}
		verify = a.proxyVerify
	} else if a.checksInside(s) {
		if err := a.ensureProxy(ctx); err != nil {
			return err
		}
	}
	if err := verify(ctx, s, live.ID); err != nil {
		return fmt.Errorf("release %d was started but is not healthy: %w", live.Release(), err)
	}
	live.State = "running"
	so.Release, so.ImageID = live.Release(), live.ImageID
	a.tidy(ctx, s, st) // an interrupted cutover also left the container it replaced
	st.Others = nil
	return nil
}

// remove stops and removes every container of a service no longer configured. Volumes stay.
func (a *Applier) remove(ctx context.Context, ch *Change, st *ServiceState) error {
	return a.step(ch.Service, StepRemove, fmt.Sprintf("stop and remove %s (volumes are kept)", plural(len(ch.RemoveIDs), "container")), func() error {
		for _, id := range ch.RemoveIDs {
			if err := a.Runtime.RemoveContainer(context.WithoutCancel(ctx), id); err != nil {
				return err
			}
		}
		return nil
	})
}

// notify sends a notice to every target that wants the event; a failure is a warning.
func (a *Applier) notify(ctx context.Context, event string, s *config.Service, n notify.Notice) {
	n.Event, n.Project, n.Service, n.Source = event, a.Project.Name, s.Name, a.Source
	n.Time = time.Now().UTC().Format(time.RFC3339)
	n.Reason = a.red.redact(n.Reason)
	for _, t := range a.Project.Notifies {
		target := notify.Target{Kind: string(t.Kind), Name: t.Name, URL: t.URL, On: t.On}
		if !target.Wants(event) {
			continue
		}
		if err := notify.Send(context.WithoutCancel(ctx), target, n); err != nil {
			a.warn(s.Name, "%s (the deploy goes on)", err)
		}
	}
}

// lineWriter turns written bytes into one event per line.
type lineWriter struct {
	emit func(string)
	buf  []byte
	last []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.buf[:i]), "\r")
		w.buf = w.buf[i+1:]
		if strings.TrimSpace(line) == "" {
			continue
		}
		w.emit(line)
		w.last = append(w.last, line)
		if len(w.last) > 5 {
			w.last = w.last[1:]
		}
	}
	return len(p), nil
}

func (w *lineWriter) tail() string {
	if len(w.buf) > 0 {
		w.last = append(w.last, string(w.buf))
	}
	if len(w.last) == 0 {
		return "(none)"
	}
	return strings.Join(w.last, " | ")
}

func hasLive(o *Observed) bool {
	for _, st := range o.Services {
		if st.Live != nil {
			return true
		}
	}
	return false
}

// settled passes when a release without a health check is still running after a short while.
func settled(ctx context.Context, alive func() error) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(settle):
	}
	return alive()
}

// registries are the credentials the configuration's registry blocks give, by host.
func (a *Applier) registries() map[string]RegistryAuth {
	out := map[string]RegistryAuth{}
	for host, r := range a.Project.Registries {
		out[host] = RegistryAuth{Username: r.Username, Password: r.Password}
	}
	return out
}
