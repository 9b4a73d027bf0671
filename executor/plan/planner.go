package plan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// Make reads the observed state of the project from the engine and diffs it against the
// configuration. The checks that reach past the engine run only when opts supplies them
// (CheckStore, ProxyRoutes): the deployer's commands call executor.MakePlan, which does.
func Make(ctx context.Context, p *config.Project, eng engine.Engine, opts PlanOptions) (*Plan, error) {
	if err := eng.Ping(ctx); err != nil {
		return nil, err
	}
	for _, t := range opts.Targets {
		if p.Service(t) == nil {
			return nil, fmt.Errorf("-target service.%s: no service %q in the configuration", t, t)
		}
	}
	obs, err := Observe(ctx, eng, p)
	if err != nil {
		return nil, err
	}
	if err := obs.ReadScratch(ctx, eng, p); err != nil {
		return nil, err
	}
	obs.ReadRoutes(ctx, eng, p, opts.ProxyRoutes)
	all, err := eng.AllContainers(ctx)
	if err != nil {
		return nil, err
	}
	// Every name the apply would use is the project's or free (the key's volume among them,
	// read next), and every volume its services mount theirs to use: names.go.
	var services []*config.Service
	for _, s := range p.Services {
		if len(opts.Targets) == 0 || Contains(opts.Targets, s.Name) {
			services = append(services, s)
		}
	}
	own := &Ownership{Ctx: ctx, Eng: eng, Project: p, All: all, Proxy: NeedsProxy(p, LocalEngine(eng.Host()) && !opts.Remote)}
	if err := own.Check(services); err != nil {
		return nil, err
	}
	hasher, keyless, err := planHasher(ctx, eng, p.Name, opts.MakeKey)
	if err != nil {
		return nil, err
	}
	pl := &planner{ctx: ctx, p: p, eng: eng, obs: obs, all: all, hasher: hasher, red: NewRedactor(p),
		imageIDs: map[string]string{}, contextHashes: map[string]string{}, release: opts.Release}
	plan, err := pl.plan(opts)
	if err != nil {
		return nil, err
	}
	plan.keyless = keyless
	plan.Warnings = append(plan.Warnings, StoreWarnings(p)...)
	return plan, preflightPlan(ctx, p, plan, all, opts)
}

// planner makes one plan: what runs, diffed against the configuration.
type planner struct {
	ctx           context.Context
	p             *config.Project
	eng           engine.Engine
	obs           *Observed
	all           []engine.Container // every container on the engine: what holds ports, what to take over
	hasher        *Hasher
	red           *Redactor
	imageIDs      map[string]string // image reference -> ID, "" when the engine lacks it
	contextHashes map[string]string // service -> build context hash
	release       map[string]int    // service -> the next release wanted (PlanOptions.Release)
}

// nextRelease is the number of a service's next release on this engine.
func (pl *planner) nextRelease(s *config.Service, st *ServiceState) int {
	next := st.MaxRelease() + 1
	want := pl.release[s.Name]
	if kept := st.keptRelease(); want > kept {
		return want
	}
	return max(next, want)
}

func (pl *planner) plan(opts PlanOptions) (*Plan, error) {
	p, obs := pl.p, pl.obs
	plan := &Plan{FormatVersion: FormatVersion, Project: p.Name, Engine: pl.eng.Host(), Changes: []*Change{}, Steps: []*Step{}, hasher: pl.hasher}
	targeted := func(name string) bool { return len(opts.Targets) == 0 || Contains(opts.Targets, name) }
	var names []string
	for _, s := range p.Services {
		if targeted(s.Name) {
			names = append(names, s.Name)
		}
	}
	if err := portConflicts(p, names, pl.all); err != nil {
		return nil, err
	}
	for _, s := range p.Services {
		if !targeted(s.Name) {
			continue
		}
		st := obs.Services[s.Name]
		if st == nil {
			st = &ServiceState{Name: s.Name}
		}
		ch, err := pl.service(s, st)
		if err != nil {
			return nil, err
		}
		plan.Changes = append(plan.Changes, ch)
	}
	for _, name := range obs.ServiceNames() {
		if p.Service(name) != nil || !targeted(name) {
			continue
		}
		plan.Changes = append(plan.Changes, removal(obs.Services[name]))
	}
	plan.Leftovers = Leftovers(obs, p, targeted)
	for _, ch := range plan.Changes {
		if t := ch.Takeover; t != nil && t.SetAside {
			what := fmt.Sprintf("apply keeps it as release %d", t.Release)
			if t.Kept {
				what = fmt.Sprintf("apply removes it: it is kept as release %d already", t.Release)
			}
			plan.Leftovers = append(plan.Leftovers, Leftover{Service: ch.Service, Kind: LeftoverExtra,
				Detail: fmt.Sprintf("container %s (%s), which an interrupted takeover set aside; %s", t.Name, t.Made, what)})
		}
	}
	plan.Ignored = obs.Ignored
	sq := &Sequencer{Project: p, Local: LocalEngine(plan.Engine) && !opts.Remote, Redactor: pl.red}
	plan.Steps = sq.plan(plan, obs)
	for _, c := range plan.Changes {
		switch c.Action {
		case ActionCreate:
			plan.Summary.Create++
		case ActionReplace:
			plan.Summary.Replace++
		case ActionUpdate:
			plan.Summary.Update++
		case ActionDelete:
			plan.Summary.Delete++
		case ActionTakeover:
			plan.Summary.TakeOver++
		}
	}
	plan.Fingerprint = Fingerprint{State: StateFingerprint(obs, pl.imageIDs), Config: ConfigFingerprint(p, pl.contextHashes, pl.hasher)}
	plan.redact(pl.red)
	return plan, nil
}

// removal removes every container of a service no longer configured.
func removal(st *ServiceState) *Change {
	ch := &Change{Service: st.Name, Action: ActionDelete, Reasons: []string{"not in the configuration any more"}}
	for _, list := range [][]*engine.Container{{st.Live}, st.Candidates, st.Previous, st.Others, st.Migrated} {
		for _, c := range list {
			if c != nil {
				ch.RemoveIDs = append(ch.RemoveIDs, c.ID)
			}
		}
	}
	if st.Live != nil {
		ch.LiveRelease, ch.Container, ch.LiveImageID = st.Live.Release(), st.Live.Name, st.Live.ImageID
	}
	return ch
}

// service plans one configured service against what runs of it.
func (pl *planner) service(s *config.Service, st *ServiceState) (*Change, error) {
	p := pl.p
	ch := &Change{Service: s.Name, Container: s.ContainerName, Image: s.Image, NextRelease: pl.nextRelease(s, st)}
	if ch.NextRelease > engine.MaxRelease {
		return nil, fmt.Errorf("service.%s: its next release would be %d, beyond the last release number (%d); nothing was changed", s.Name, ch.NextRelease, engine.MaxRelease)
	}
	live := st.Live
	doc := SpecDoc(p, s, pl.hasher)
	var oldDoc map[string]string
	if live != nil {
		ch.LiveRelease, ch.LiveImageID = live.Release(), live.ImageID
		if raw := live.Labels[engine.LabelEngines]; raw != "" {
			_ = json.Unmarshal([]byte(raw), &ch.Engines) // unreadable: nothing recorded
		}
		if raw := live.Labels[engine.LabelSpecDoc]; raw != "" {
			_ = json.Unmarshal([]byte(raw), &oldDoc) // an unreadable doc shows every attribute as new
		}
	}
	imageChanged, err := pl.image(s, live, ch)
	if err != nil {
		return nil, err
	}
	if ch.ImageID != "" {
		ch.SpecHash = SpecHash(doc, ch.ImageID)
	}
	foreign, err := pl.foreign(s)
	if err != nil {
		return nil, err
	}
	if foreign != nil {
		// A container of the live name is taken over as the release before the next one. One
		// an interrupted takeover set aside keeps the number it was given then: the one
		// before the release that replaced it (which recorded it), never the next one's.
		release, setAside := st.keptRelease()+1, false
		if by := st.takeoverBy(foreign.ID); foreign.Name != s.ContainerName && by != nil {
			release, setAside = by.Release()-1, true
		}
		if release > engine.MaxRelease {
			return nil, fmt.Errorf("service.%s: release numbers are used up (%d): remove old releases", s.Name, engine.MaxRelease)
		}
		if ch.Takeover, err = pl.takeover(s, foreign, release); err != nil {
			return nil, err
		}
		if !setAside || live == nil {
			// Nothing is live: the container (set aside by a restart cutover that stopped
			// before it started the new release) is started again and replaced.
			return pl.takeoverChange(s, ch, doc)
		}
		ch.Takeover.SetAside = true
		for _, c := range st.Previous {
			if c.Labels[LabelTakenOver] != "" && c.Release() == release {
				ch.Takeover.Kept = true // copied before the interruption
			}
		}
		if !ch.Takeover.Kept && st.hasRelease(release) {
			return nil, fmt.Errorf("service.%s: container %s, set aside by an interrupted takeover as release %d, cannot be kept as that release: another container of the service has its number; nothing was changed", s.Name, foreign.Name, release)
		}
	}
	ch.Attributes = diffAttrs(p, s, oldDoc, doc, live == nil, pl.hasher)
	switch {
	case live == nil:
		ch.Action = ActionCreate
		ch.Reasons = append(ch.Reasons, "no live release")
	case len(ch.Attributes) > 0 || imageChanged:
		ch.Action = ActionReplace
		if len(ch.Attributes) > 0 {
			ch.Reasons = append(ch.Reasons, fmt.Sprintf("spec changed (%s)", Plural(len(ch.Attributes), "attribute")))
		}
	case !live.Running():
		ch.Action = ActionUpdate
		ch.Reasons = append(ch.Reasons, fmt.Sprintf("live release %d is %s: apply starts it", live.Release(), live.State))
	case live.Name != s.ContainerName:
		// A resumed release takes its live name back only once verified (rn.resume).
		ch.Action, ch.Unverified = ActionUpdate, true
		ch.Reasons = append(ch.Reasons, fmt.Sprintf("live release %d runs as %s: an interrupted apply started it and did not verify it; apply health-checks it again", live.Release(), live.Name))
	default:
		ch.Action = ActionNone
	}
	if ch.Action == ActionNone || ch.Action == ActionUpdate {
		ch.NextRelease = 0
	}
	if ch.Action == ActionReplace {
		ch.Prune = pruned(s, st, ch.ImageID)
		ch.PortHandover = pl.portHandover(s, live)
	}
	return ch, nil
}

// RecordedCutover reports whether a release was deployed with the proxy cutover, as its
// recorded spec says; def when it records none.
func RecordedCutover(c engine.Container, def bool) bool {
	var doc map[string]string
	if json.Unmarshal([]byte(c.Labels[engine.LabelSpecDoc]), &doc) != nil || doc[config.AttrDeployCutover] == "" {
		return def
	}
	return doc[config.AttrDeployCutover] == `"proxy"`
}

// portHandover says whether replacing the live release moves the service's host ports between
// it and the proxy, as the container is (its recorded spec says how it was first deployed; a
// rollback goes through the cutover of its time): it publishes them itself and the service's
// cutover goes through the proxy, or it publishes none, the project has a proxy, and the
// service's cutover is the restart one.
func (pl *planner) portHandover(s *config.Service, live *engine.Container) string {
	if len(s.Ports) == 0 {
		return ""
	}
	st, err := pl.eng.Inspect(pl.ctx, live.ID)
	if err != nil {
		return "" // gone meanwhile: apply says so
	}
	proxied := s.Deploy.Cutover == config.CutoverProxy
	switch {
	case proxied && PublishesItself(s, st):
		return HandoverToProxy
	case !proxied && len(st.Spec.Ports) == 0 && pl.obs.Proxy != nil:
		return HandoverFromProxy
	}
	return ""
}

// takeoverChange plans the replacement of a container the deployer did not make: blue-green as
// from a live release, which it becomes, numbered, and is kept as the previous release.
func (pl *planner) takeoverChange(s *config.Service, ch *Change, doc map[string]string) (*Change, error) {
	t := ch.Takeover
	ch.Action = ActionTakeover
	ch.LiveRelease, ch.LiveImageID, ch.NextRelease = t.Release, t.ImageID, t.Release+1
	ch.Reasons = append(ch.Reasons, fmt.Sprintf("container %s (%s, %s) runs without the deployer: it is replaced blue-green and kept as release %d, for rollback", t.Name, t.Made, t.State, t.Release))
	for _, a := range diffAttrs(pl.p, s, t.Doc, doc, false, pl.hasher) {
		if takeoverKey(a.Path) {
			ch.Attributes = append(ch.Attributes, a)
		}
	}
	return ch, nil
}

// pruned lists the releases the clean-up of a replace removes: after it, the old live release
// is the newest previous one, and those beyond keep_releases go.
func pruned(s *config.Service, st *ServiceState, newImage string) []Pruned {
	after := append([]*engine.Container{st.Live}, st.Previous...)
	if len(after) <= s.Deploy.KeepReleases {
		return nil
	}
	kept := map[string]bool{newImage: true}
	for _, c := range after[:s.Deploy.KeepReleases] {
		kept[c.ImageID] = true
	}
	var out []Pruned
	for _, c := range after[s.Deploy.KeepReleases:] {
		p := Pruned{Release: c.Release(), Container: c.Name, Image: c.ImageRef(), ImageID: c.ImageID, RemoveImage: true}
		switch {
		case !ImageOwned(c):
			p.RemoveImage, p.KeptBecause = false, "the deployer did not make it"
		case kept[c.ImageID]:
			p.RemoveImage, p.KeptBecause = false, "a release that stays uses it"
		}
		out = append(out, p)
	}
	return out
}

// image works out the service's image: built from a context (compare content hashes), or a
// named image (compare IDs). It reports whether it differs from the live release's.
func (pl *planner) image(s *config.Service, live *engine.Container, ch *Change) (bool, error) {
	if s.Build != nil {
		dir := filepath.Join(pl.p.Dir, s.Build.Context)
		content, err := engine.ContextHash(dir, s.Build.Dockerfile)
		if err != nil {
			return false, fmt.Errorf("service.%s: %w", s.Name, err)
		}
		hash := BuildHash(pl.p, s, content, pl.hasher)
		ch.ContextHash = hash
		pl.contextHashes[s.Name] = hash
		if live != nil && live.Labels[engine.LabelContextHash] == hash {
			ch.ImageID = live.ImageID // the same build: apply reuses the live image, no rebuild
			return false, nil
		}
		if live != nil {
			ch.Reasons = append(ch.Reasons, "build context, Dockerfile, args or image name changed")
		}
		return live != nil, nil
	}
	id, err := "", error(nil)
	if cached, ok := pl.imageIDs[s.Image]; ok { // services sharing an image cost one inspect
		id = cached
		if id == "" {
			err = engine.ErrNotFound
		}
	} else {
		id, err = pl.eng.ImageID(pl.ctx, s.Image)
	}
	switch {
	case errors.Is(err, engine.ErrNotFound):
		pl.imageIDs[s.Image] = ""
		if live != nil {
			ch.Reasons = append(ch.Reasons, fmt.Sprintf("image %s is not on the engine: apply pulls it", s.Image))
		}
		return live != nil, nil
	case err != nil:
		return false, fmt.Errorf("service.%s: image %s: %w", s.Name, s.Image, err)
	}
	pl.imageIDs[s.Image] = id
	ch.ImageID = id
	if live != nil && live.ImageID != id {
		ch.Reasons = append(ch.Reasons, fmt.Sprintf("image changed: %s -> %s", Short(live.ImageID), Short(id)))
		return true, nil
	}
	return false, nil
}

// diffAttrs lists the attributes that differ; for a new service, every attribute. A sensitive
// value recorded by an earlier version (unkeyed) is compared as such, not shown as changed.
func diffAttrs(p *config.Project, s *config.Service, oldDoc, doc map[string]string, create bool, h *Hasher) []AttrChange {
	raw := s.Attributes()
	keys := map[string]bool{}
	for k := range oldDoc {
		keys[k] = true
	}
	for k := range doc {
		keys[k] = true
	}
	var out []AttrChange
	for _, k := range SortedKeys(keys) {
		o, hasOld := oldDoc[k]
		n, hasNew := doc[k]
		sensitive := p.IsSensitive(s.Name, k) || isSensitiveRecord(o)
		switch {
		case create:
			hasOld = false
		case hasOld == hasNew && o == n:
			continue
		case hasOld && hasNew && isSensitiveRecord(o) && p.IsSensitive(s.Name, k) && h.Matches(o, raw[k]):
			continue
		}
		ac := AttrChange{Path: k, HasOld: hasOld, HasNew: hasNew}
		if hasOld {
			ac.Old = json.RawMessage(o)
		}
		if hasNew {
			ac.New = json.RawMessage(n)
		}
		if sensitive {
			ac.Sensitive = true
			ac.Old, ac.New = mask(hasOld), mask(hasNew)
		}
		if _, set := s.Ranges[rangeKey(k)]; hasNew && !set {
			ac.Default = true
		}
		out = append(out, ac)
	}
	return out
}

func mask(has bool) json.RawMessage {
	if has {
		return json.RawMessage(`"(sensitive)"`)
	}
	return nil
}

// rangeKey maps an attribute path to the key under which its source range was recorded: the map
// attributes (env, build.args) are recorded as a whole.
func rangeKey(k string) string {
	for _, m := range []string{"env.", "build.args."} {
		if strings.HasPrefix(k, m) {
			return strings.TrimSuffix(m, ".")
		}
	}
	return k
}

// Leftovers lists what interrupted applies left, as the plan shows it.
func Leftovers(o *Observed, p *config.Project, targeted func(string) bool) []Leftover {
	var out []Leftover
	if o.Lock != nil {
		out = append(out, Leftover{Kind: LeftoverLock, Detail: fmt.Sprintf("deploy lock held by %s since %s; apply waits for it (-lock-timeout) or run `deployer unlock -force`",
			OrUnknown(o.Lock.Labels[engine.LabelHolder]), OrUnknown(o.Lock.Labels[engine.LabelCreatedAt]))})
	}
	if n := o.ProxyNext; n != nil {
		out = append(out, Leftover{Kind: LeftoverProxyUpgrade, Detail: fmt.Sprintf("an interrupted upgrade of the proxy left %s (%s) beside %s (%s); apply finishes the upgrade", n.Name, n.State, o.Proxy.Name, o.Proxy.State)})
	} else if o.Proxy != nil && strings.HasSuffix(o.Proxy.Name, ProxyNextSuffix) {
		out = append(out, Leftover{Kind: LeftoverProxyUpgrade, Detail: fmt.Sprintf("an interrupted upgrade of the proxy left %s serving under its temporary name; apply renames it", o.Proxy.Name)})
	}
	for _, s := range p.Services {
		// Served by the proxy as it was deployed: a live release of the restart cutover
		// publishes its ports itself, whatever the configuration says now.
		if st := o.Services[s.Name]; st != nil && st.Live != nil && RecordedCutover(*st.Live, PlanCutover(s, true, false).ServedByProxy()) && st.Live.Running() && (o.Proxy == nil || !o.Proxy.Running()) {
			out = append(out, Leftover{Kind: LeftoverProxy, Detail: "the proxy is not running, so proxied services get no traffic: apply starts it and restores its routes"})
			break
		}
	}
	for _, name := range o.ServiceNames() {
		if !targeted(name) || p.Service(name) == nil {
			continue // a service no longer configured is removed whole
		}
		st := o.Services[name]
		for _, c := range st.Candidates {
			detail := fmt.Sprintf("candidate %s (release %d, %s) from an interrupted apply; apply removes it", c.Name, c.Release(), c.State)
			if o.Routed[name] == c {
				detail = servedCandidate(p.Service(name), st, c)
			}
			out = append(out, Leftover{Service: name, Kind: LeftoverCandidate, Detail: detail})
		}
		if st.Live != nil && !st.Live.Running() {
			out = append(out, Leftover{Service: name, Kind: LeftoverStoppedLive, Detail: fmt.Sprintf("live container %s (release %d) is %s", st.Live.Name, st.Live.Release(), st.Live.State)})
		}
		for _, v := range o.Safety {
			if v.Labels[engine.LabelService] == name {
				out = append(out, Leftover{Service: name, Kind: LeftoverScratch, Detail: fmt.Sprintf("safety copy %s of an interrupted held migration (volume %s before it); apply puts it back if release %s is still the stopped live one, else removes it", v.Name, v.Labels[LabelVolume], v.Labels[engine.LabelRelease])})
			}
		}
		for _, v := range o.ScratchOf(name) {
			out = append(out, Leftover{Service: name, Kind: LeftoverScratch, Detail: fmt.Sprintf("scratch volume %s of an interrupted backup (a copy of its databases); apply removes it", v)})
		}
		for _, c := range st.Others {
			out = append(out, Leftover{Service: name, Kind: LeftoverExtra, Detail: fmt.Sprintf("container %s (role %q, release %d) besides the live one; apply keeps it as a previous release", c.Name, c.Role(), c.Release())})
		}
	}
	return out
}

// servedCandidate is what the plan says of a leftover candidate the proxy routes the service's
// requests to, which an interrupted cutover switched to: the next apply routes them back to the
// live release (the proxy step) and lets the candidate finish what it has in flight (the clean
// step) before it removes it.
func servedCandidate(s *config.Service, st *ServiceState, c *engine.Container) string {
	detail := fmt.Sprintf("candidate %s (release %d, %s) serves: an interrupted cutover left the proxy routing the service's requests to it", c.Name, c.Release(), c.State)
	if l := st.Live; l != nil && l.Running() {
		return detail + fmt.Sprintf(", not to the live release %d (%s); apply routes them back to release %d, lets the candidate finish its requests in flight (deploy.drain, up to %s), then removes it", l.Release(), l.Name, l.Release(), Dur(s.Deploy.Drain))
	}
	return detail + "; apply removes it"
}
