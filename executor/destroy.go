package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/deployer-dev/deployer/executor/plan"

	"github.com/deployer-dev/deployer/config"
)

// destroy takes a project down on an engine: what the deployer made for it goes (its releases
// in every role, the proxy and its routes, the project's network, its key, the proxy's state
// volume, the scratch volumes of interrupted backups, the images it built or pulled for the
// releases, and at the end its lock), and what holds data stays: the data volumes the releases
// mount, the safety copies of interrupted migrations, and the backups. With DeleteVolumes the
// data volumes go too, each backed up first; one that a container of anything else mounts stays.

// Steps of destroy.
const (
	StepDestroyProxy   plan.StepKind = "proxy"
	StepDestroyNetwork plan.StepKind = "network"
	StepDestroyImages  plan.StepKind = "images"
	StepDestroyVolumes plan.StepKind = "volumes"
	StepDestroyKey     plan.StepKind = "key"
)

// proxyStopGrace is how long the proxy's requests in flight may finish when destroy stops it.
const proxyStopGrace = 30 * time.Second

// DestroyOptions say what destroy may remove beyond what the deployer made for itself.
type DestroyOptions struct {
	// DeleteVolumes removes the data volumes too, after backing each up.
	DeleteVolumes bool
}

// DestroyPlan is what destroy will remove from one engine and what it keeps, as a value: it is
// shown (text or JSON) before anything is removed.
type DestroyPlan struct {
	FormatVersion string `json:"format_version"`
	Project       string `json:"project"`
	Engine        string `json:"engine"`
	// EngineName names the engine in a configuration with engine blocks.
	EngineName    string     `json:"engine_name,omitempty"`
	DeleteVolumes bool       `json:"delete_volumes"`
	Containers    []Teardown `json:"containers"` // releases, candidates, one-offs, the proxy
	Images        []Teardown `json:"images"`     // those the deployer built or pulled for them
	Networks      []string   `json:"networks"`
	Volumes       []Teardown `json:"volumes"` // the deployer's own, and data volumes with DeleteVolumes
	Backups       []Teardown `json:"backups,omitempty"`
	Kept          []Teardown `json:"kept"` // what stays, and why
	Key           bool       `json:"key"`  // the project's key goes
	// Lock is who holds the deploy lock now, "" when nobody: destroy takes it, as apply does.
	Lock string `json:"lock,omitempty"`

	backups []destroyBackup
}

// Teardown is one thing destroy removes or keeps.
type Teardown struct {
	Name   string `json:"name"`
	Detail string `json:"detail,omitempty"`
	id     string
	// volume: a data volume (its service, for backups).
	service string
	data    bool
}

// destroyBackup is a backup destroy takes before it deletes data volumes: of one service, from
// one of its containers that mounts them.
type destroyBackup struct {
	service string
	from    string // container ID
	volumes []string
	store   string
}

// Empty reports whether there is nothing to remove.
func (dp *DestroyPlan) Empty() bool {
	return len(dp.Containers) == 0 && len(dp.Images) == 0 && len(dp.Networks) == 0 && len(dp.Volumes) == 0 && !dp.Key
}

// PlanDestroy reads what the project has on the engine and says what destroy removes and keeps.
func PlanDestroy(ctx context.Context, p *config.Project, eng Runtime, opts DestroyOptions) (*DestroyPlan, error) {
	if err := eng.Ping(ctx); err != nil {
		return nil, err
	}
	obs, err := plan.Observe(ctx, eng, p)
	if err != nil {
		return nil, err
	}
	all, err := eng.AllContainers(ctx)
	if err != nil {
		return nil, err
	}
	labelled, err := eng.Volumes(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	nets, err := eng.Networks(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	key, err := eng.ReadProjectKey(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	dp := &DestroyPlan{FormatVersion: plan.FormatVersion, Project: p.Name, Engine: eng.Host(), DeleteVolumes: opts.DeleteVolumes,
		Containers: []Teardown{}, Images: []Teardown{}, Networks: nets, Volumes: []Teardown{}, Kept: []Teardown{}, Key: key != nil}
	if dp.Networks == nil {
		dp.Networks = []string{}
	}
	if obs.Lock != nil {
		dp.Lock = describeLock(obs.Lock)
	}
	// Containers: the proxy first, then each service's, newest release first.
	mounted := map[string][]*Container{} // volume -> the project's containers that mount it
	for i := range obs.All {
		c := &obs.All[i]
		if c.Role() == plan.RoleLock {
			continue
		}
		dp.Containers = append(dp.Containers, Teardown{Name: c.Name, id: c.ID, service: c.Service(), Detail: describeTeardown(c)})
		for _, v := range c.Mounts {
			mounted[v] = append(mounted[v], c)
		}
	}
	sort.SliceStable(dp.Containers, func(i, j int) bool {
		return dp.Containers[i].service == "" && dp.Containers[j].service != "" ||
			dp.Containers[i].service != "" && dp.Containers[j].service != "" && dp.Containers[i].service < dp.Containers[j].service
	})
	// Images the deployer made for the releases; not one a container of anything else runs.
	others := map[string]string{}  // image ID -> a container of something else that runs it
	users := map[string][]string{} // volume -> containers of something else that mount it
	for _, c := range all {
		if c.Labels[LabelProject] == p.Name {
			continue
		}
		others[c.ImageID] = c.Name
		for _, v := range c.Mounts {
			users[v] = append(users[v], plan.DescribeOwner(c))
		}
	}
	seen := map[string]bool{}
	for _, c := range obs.All {
		if c.Service() == "" || !plan.ImageOwned(&c) || seen[c.ImageID] {
			continue
		}
		seen[c.ImageID] = true
		if user := others[c.ImageID]; user != "" {
			dp.Kept = append(dp.Kept, Teardown{Name: "image " + c.ImageRef(), Detail: "container " + user + " runs it too"})
			continue
		}
		dp.Images = append(dp.Images, Teardown{Name: c.ImageRef(), id: c.ImageID, Detail: plan.Short(c.ImageID)})
	}
	// The deployer's own volumes, by their labels.
	ownVolume := map[string]bool{}
	for _, v := range labelled {
		if v.Labels[LabelKey] == "" && (v.Labels[LabelRole] == plan.RoleData || v.Labels[LabelRole] == plan.RoleProxy) {
			if _, ok := mounted[v.Name]; ok {
				continue // the services' data and the proxy's state: below, by who mounts them
			}
		}
		ownVolume[v.Name] = true
		switch {
		case v.Labels[LabelKey] != "":
			// the key: removed with RemoveProjectKey, named here
			dp.Volumes = append(dp.Volumes, Teardown{Name: v.Name, Detail: "the project's key"})
		case v.Labels[LabelRole] == plan.RoleScratch:
			dp.Volumes = append(dp.Volumes, Teardown{Name: v.Name, id: v.Name, Detail: "scratch space an interrupted backup or migration left"})
		case v.Labels[LabelRole] == plan.RoleSafety:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + v.Name, Detail: fmt.Sprintf("the safety copy of volume %s that an interrupted migration of service.%s made: remove it by hand once its data is not needed", v.Labels[plan.LabelVolume], v.Labels[LabelService])})
		case v.Labels[LabelRole] == plan.RoleProxy && v.Name == plan.ProxyStateVolume(p):
			// an interrupted destroy removed the proxy before its state
			dp.Volumes = append(dp.Volumes, Teardown{Name: v.Name, id: v.Name, Detail: "the proxy's routes"})
		case v.Labels[LabelRole] == plan.RoleData:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + v.Name, Detail: "data the project's services used, mounted by no container now: remove it by hand (`docker volume rm`) once its data is not needed"})
		default:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + v.Name, Detail: fmt.Sprintf("labelled for the project with role %q, which this deployer does not know", v.Labels[LabelRole])})
		}
	}
	// The volumes the containers mount: the proxy's state, and the services' data.
	for _, name := range plan.SortedKeys(mounted) {
		if ownVolume[name] {
			continue
		}
		byProxy, services := false, map[string]bool{}
		for _, c := range mounted[name] {
			if c.Role() == plan.RoleProxy {
				byProxy = true
			} else if c.Service() != "" {
				services[c.Service()] = true
			}
		}
		switch {
		case len(users[name]) > 0:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + name, Detail: "also mounted by " + strings.Join(users[name], ", ")})
		case byProxy && len(services) == 0 && name == plan.ProxyName(p.Name)+"-state":
			dp.Volumes = append(dp.Volumes, Teardown{Name: name, id: name, Detail: "the proxy's routes"})
		case len(services) != 1:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + name, Detail: "mounted by the proxy and by services, or by more than one service: remove it by hand"})
		case !opts.DeleteVolumes:
			svc := plan.SortedKeys(services)[0]
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + name, service: svc, data: true, Detail: fmt.Sprintf("data of service.%s (destroy -delete-volumes removes it, after a backup)", svc)})
		default:
			svc := plan.SortedKeys(services)[0]
			dp.Volumes = append(dp.Volumes, Teardown{Name: name, id: name, service: svc, data: true, Detail: fmt.Sprintf("data of service.%s, after its backup", svc)})
		}
	}
	if opts.DeleteVolumes {
		dp.planBackups(p, obs)
	}
	red := plan.NewRedactor(p)
	for _, list := range [][]Teardown{dp.Containers, dp.Images, dp.Volumes, dp.Backups, dp.Kept} {
		for i := range list {
			list[i].Name, list[i].Detail = red.Redact(list[i].Name), red.Redact(list[i].Detail)
		}
	}
	return dp, nil
}

// planBackups decides the backups that come before the data volumes go: for each service, from
// its live release (else the newest container of it) that mounts them.
func (dp *DestroyPlan) planBackups(p *config.Project, obs *plan.Observed) {
	byService := map[string][]string{}
	for _, v := range dp.Volumes {
		if v.data {
			byService[v.service] = append(byService[v.service], v.Name)
		}
	}
	for _, svc := range plan.SortedKeys(byService) {
		st := obs.Services[svc]
		var order []*Container
		if st != nil {
			order = append(order, st.Live)
			order = append(order, st.Previous...)
			order = append(order, st.Others...)
			order = append(order, st.Candidates...)
		}
		left := byService[svc]
		for _, c := range order {
			if c == nil || len(left) == 0 {
				continue
			}
			var these, rest []string
			for _, v := range left {
				if plan.Contains(c.Mounts, v) {
					these = append(these, v)
				} else {
					rest = append(rest, v)
				}
			}
			if len(these) == 0 {
				continue
			}
			left = rest
			store := config.DefaultStoreName
			if s := p.Service(svc); s != nil && s.Backup != nil {
				store = s.Backup.Store
			}
			b := destroyBackup{service: svc, from: c.ID, volumes: these, store: store}
			dp.backups = append(dp.backups, b)
			dp.Backups = append(dp.Backups, Teardown{Name: "service." + svc, service: svc,
				Detail: fmt.Sprintf("volumes %s from release %d (%s) to backup_store.%s", strings.Join(these, ", "), c.Release(), c.Name, store)})
		}
	}
}

// describeTeardown says what a container of the project is.
func describeTeardown(c *Container) string {
	switch c.Role() {
	case plan.RoleProxy:
		return fmt.Sprintf("the project's proxy and its routes (%s)", c.State)
	case plan.RoleOneOff:
		return fmt.Sprintf("a one-off container of service.%s (%s)", c.Service(), c.State)
	}
	role := c.Role()
	if ln := c.Labels[LabelLiveName]; ln != "" && c.Name == ln {
		role = plan.RoleLive
	}
	return fmt.Sprintf("release %d of service.%s (%s, %s)", c.Release(), c.Service(), role, c.State)
}

// WriteText shows what destroy will do.
func (dp *DestroyPlan) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "Project %q on %s\n", dp.Project, dp.Engine)
	if dp.Empty() {
		if len(dp.Kept) == 0 {
			_, err := fmt.Fprintf(w, "\nNothing to destroy: the project has nothing on this engine.\n")
			return err
		}
		// A destroy before this one kept the data: say so again, and that nothing else is left.
		fmt.Fprintf(w, "\nNothing to destroy: the project has nothing else on this engine.\n")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "\nKept:\n")
		for _, k := range dp.Kept {
			fmt.Fprintf(tw, "      %s\t%s\n", k.Name, k.Detail)
		}
		return tw.Flush()
	}
	if dp.Lock != "" {
		fmt.Fprintf(w, "\nThe deploy lock is held by %s: destroy waits for it as apply does.\n", dp.Lock)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if len(dp.Backups) > 0 {
		fmt.Fprintf(tw, "\nBacked up first (-delete-volumes):\n")
		for _, b := range dp.Backups {
			fmt.Fprintf(tw, "  +   backup of %s\t%s\n", b.Name, b.Detail)
		}
	}
	if !dp.Empty() {
		fmt.Fprintf(tw, "\nRemoved:\n")
	}
	for _, c := range dp.Containers {
		fmt.Fprintf(tw, "  -   container %s\t%s\n", c.Name, c.Detail)
	}
	for _, i := range dp.Images {
		fmt.Fprintf(tw, "  -   image %s\t%s\n", i.Name, i.Detail)
	}
	for _, n := range dp.Networks {
		fmt.Fprintf(tw, "  -   network %s\t\n", n)
	}
	for _, v := range dp.Volumes {
		fmt.Fprintf(tw, "  -   volume %s\t%s\n", v.Name, v.Detail)
	}
	if dp.Key && !dp.hasKeyVolume() {
		fmt.Fprintf(tw, "  -   the project's key\t\n")
	}
	if len(dp.Kept) > 0 {
		fmt.Fprintf(tw, "\nKept:\n")
		for _, k := range dp.Kept {
			fmt.Fprintf(tw, "      %s\t%s\n", k.Name, k.Detail)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nBackups in the backup stores are kept.\n")
	_, err := fmt.Fprintf(w, "Destroy: %s, %s, %s, %s to remove; %s kept.\n", plan.Plural(len(dp.Containers), "container"),
		plan.Plural(len(dp.Images), "image"), plan.Plural(len(dp.Networks), "network"), plan.Plural(len(dp.Volumes), "volume"), plan.Plural(len(dp.Kept), "thing"))
	return err
}

func (dp *DestroyPlan) hasKeyVolume() bool {
	for _, v := range dp.Volumes {
		if v.Detail == "the project's key" {
			return true
		}
	}
	return false
}

// DestroyOutcome is what destroy did on one engine.
type DestroyOutcome struct {
	Engine  string   `json:"engine,omitempty"`
	Backups []string `json:"backups,omitempty"` // "backup ID of service.NAME in STORE"
	Removed int      `json:"removed"`
	Kept    []string `json:"kept,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// destroyRun is a run of destroy: what only destroy does (the backups of the volumes it deletes,
// the volumes) beside what every run does.
type destroyRun struct{ *run }

// Destroy carries out a destroy plan under the project's deploy lock: the backups first (a
// failed one stops it before anything is removed), then the proxy, the containers, the images,
// the networks, the volumes and the key; the lock goes last.
func (a *Applier) Destroy(ctx context.Context, dp *DestroyPlan) (*DestroyOutcome, error) {
	out := &DestroyOutcome{Engine: a.engine}
	rn := destroyRun{a.newRun()}
	unlock, err := rn.begin(ctx, false)
	if err != nil {
		return out, err
	}
	defer unlock()
	if err := rn.destroyBackups(ctx, dp, out); err != nil {
		return out, err
	}
	// Nothing below is left half-done by an interruption: each removal finishes.
	ctx = context.WithoutCancel(ctx)
	obs, err := plan.Observe(ctx, rn.Runtime, rn.Project)
	if err != nil {
		return out, err
	}
	var failed []string
	note := func(err error) {
		if err != nil {
			failed = append(failed, err.Error())
		}
	}
	if obs.Proxy != nil {
		note(rn.step("", StepDestroyProxy, "", "stop the proxy (its requests in flight finish) and remove it with its routes", func() error {
			for _, px := range []*Container{obs.Proxy, obs.ProxyNext} {
				if px != nil {
					rn.Runtime.StopContainer(ctx, px.ID, proxyStopGrace)
					if err := rn.Runtime.RemoveContainer(ctx, px.ID); err != nil {
						return err
					}
					out.Removed++
				}
			}
			return nil
		}))
	}
	byService := map[string][]*Container{}
	for i := range obs.All {
		c := &obs.All[i]
		if c.Role() != plan.RoleLock && c.Role() != plan.RoleProxy {
			byService[c.Service()] = append(byService[c.Service()], c)
		}
	}
	for _, svc := range plan.SortedKeys(byService) {
		list := byService[svc]
		stop := config.DefaultStopTimeout
		if s := rn.Project.Service(svc); s != nil {
			stop = s.Deploy.StopTimeout
		}
		note(rn.step(svc, plan.StepRemove, "", fmt.Sprintf("stop and remove %s", plan.Plural(len(list), "container")), func() error {
			for _, c := range list {
				if c.Running() {
					rn.Runtime.StopContainer(ctx, c.ID, stop)
				}
				if err := rn.Runtime.RemoveContainer(ctx, c.ID); err != nil {
					return err
				}
				out.Removed++
			}
			return nil
		}))
	}
	if len(dp.Images) > 0 {
		note(rn.step("", StepDestroyImages, "", fmt.Sprintf("remove %s the deployer made for the releases", plan.Plural(len(dp.Images), "image")), func() error {
			for _, img := range dp.Images {
				if err := rn.Runtime.RemoveImage(ctx, img.id); err != nil {
					return err
				}
				if _, err := rn.Runtime.ImageID(ctx, img.id); err == nil {
					out.Kept = append(out.Kept, fmt.Sprintf("image %s: the engine keeps it (a container of something else uses it, or another tag names it)", img.Name))
					continue
				}
				out.Removed++
			}
			return nil
		}))
	}
	if len(dp.Networks) > 0 {
		note(rn.step("", StepDestroyNetwork, "", "remove "+strings.Join(dp.Networks, ", "), func() error {
			for _, n := range dp.Networks {
				if err := rn.Runtime.RemoveNetwork(ctx, n); err != nil {
					return err
				}
				out.Removed++
			}
			return nil
		}))
	}
	if vols := dp.removableVolumes(); len(vols) > 0 {
		note(rn.step("", StepDestroyVolumes, "", "remove volumes "+strings.Join(vols, ", "), func() error {
			return rn.removeVolumes(ctx, dp, vols, out)
		}))
	}
	if dp.Key {
		note(rn.step("", StepDestroyKey, "", "remove the project's key", func() error {
			out.Removed++
			return rn.Runtime.RemoveProjectKey(ctx, rn.Project.Name)
		}))
	}
	if len(failed) > 0 {
		return out, fmt.Errorf("destroy did not remove everything: %s; run it again", strings.Join(failed, "; "))
	}
	return out, nil
}

// removableVolumes are the volumes of the plan removed by name (the key goes by
// RemoveProjectKey).
func (dp *DestroyPlan) removableVolumes() []string {
	var out []string
	for _, v := range dp.Volumes {
		if v.id != "" {
			out = append(out, v.id)
		}
	}
	return out
}

// removeVolumes removes the plan's volumes once the project's containers are gone. A data
// volume that a container of anything else mounts now (made since the plan) stays.
func (rn destroyRun) removeVolumes(ctx context.Context, dp *DestroyPlan, vols []string, out *DestroyOutcome) error {
	all, err := rn.Runtime.AllContainers(ctx)
	if err != nil {
		return err
	}
	users := map[string]string{}
	for _, c := range all {
		for _, v := range c.Mounts {
			users[v] = plan.DescribeOwner(c)
		}
	}
	var errs []error
	for _, v := range vols {
		if u := users[v]; u != "" {
			out.Kept = append(out.Kept, fmt.Sprintf("volume %s: %s mounts it", v, u))
			continue
		}
		if err := rn.Runtime.RemoveVolume(ctx, v); err != nil {
			errs = append(errs, err)
			continue
		}
		out.Removed++
	}
	return errors.Join(errs...)
}

// destroyBackups takes the backups of the data volumes destroy deletes.
func (rn destroyRun) destroyBackups(ctx context.Context, dp *DestroyPlan, out *DestroyOutcome) error {
	if len(dp.backups) == 0 {
		return nil
	}
	obs, err := plan.Observe(ctx, rn.Runtime, rn.Project)
	if err != nil {
		return err
	}
	for _, b := range dp.backups {
		var from *Container
		for i := range obs.All {
			if obs.All[i].ID == b.from {
				from = &obs.All[i]
			}
		}
		err := rn.step(b.service, plan.StepBackup, "", fmt.Sprintf("back up volumes %s before they are deleted", strings.Join(b.volumes, ", ")), func() error {
			if from == nil {
				return fmt.Errorf("the container %s to back up from is gone since destroy read the engine", plan.Short(b.from))
			}
			s, p, err := rn.backupService(ctx, b, from)
			if err != nil {
				return err
			}
			brn := *rn.run
			a := *rn.Applier
			a.Project = p
			brn.Applier = &a
			m, err := brn.backups().take(ctx, s, from, "destroy -delete-volumes", 0)
			if err != nil {
				return err
			}
			sb, err := OpenBackups(ctx, p, s, "")
			if err != nil {
				return err
			}
			out.Backups = append(out.Backups, fmt.Sprintf("backup %s of service.%s (%s) in %s", m.ID, s.Name, strings.Join(b.volumes, ", "), sb.Store))
			return nil
		})
		if err != nil {
			return fmt.Errorf("service.%s: the backup before deleting its volumes failed, so nothing was removed: %w", b.service, err)
		}
	}
	return nil
}

// backupService is the service a destroy backup is taken as: the configured one's backup
// settings (or the embedded store's defaults) over the volumes the container mounts, with the
// project's stores (and the embedded one).
func (rn destroyRun) backupService(ctx context.Context, b destroyBackup, from *Container) (*config.Service, *config.Project, error) {
	st, err := rn.Runtime.Inspect(ctx, from.ID)
	if err != nil {
		return nil, nil, err
	}
	p := *rn.Project
	p.Stores = map[string]*config.Store{}
	for k, v := range rn.Project.Stores {
		p.Stores[k] = v
	}
	if p.Stores[config.DefaultStoreName] == nil {
		p.Stores[config.DefaultStoreName] = &config.Store{Name: config.DefaultStoreName, Kind: config.StoreLocal, Directory: config.DefaultStoreDirectory}
	}
	s := config.NewService(b.service)
	pol := config.NewBackup()
	if cs := rn.Project.Service(b.service); cs != nil {
		c := *cs
		s = &c
		if cs.Backup != nil {
			bp := *cs.Backup
			pol = &bp
		}
	}
	pol.Store, pol.Volumes, pol.Keep = b.store, b.volumes, 0
	s.Backup = pol
	s.Volumes = nil
	for _, m := range st.Spec.Volumes {
		s.Volumes = append(s.Volumes, &config.Volume{Name: m.Name, Target: m.Target})
	}
	var dbs []*config.SQLite
	for _, db := range s.SQLite {
		if plan.Contains(b.volumes, db.Volume) {
			dbs = append(dbs, db)
		}
	}
	s.SQLite = dbs
	return s, &p, nil
}

// Destroy carries out every engine's destroy plan, under the deploy lock of every engine (taken
// on all of them first, or on none). Each engine's outcome comes back by its name.
func (f *Fleet) Destroy(ctx context.Context, plans map[string]*DestroyPlan) (map[string]*DestroyOutcome, error) {
	var mu sync.Mutex
	outs := map[string]*DestroyOutcome{}
	_, err := f.onEngines(ctx, plan.SortedKeys(plans), nil, func(a *Applier) ([]*ServiceOutcome, error) {
		out, err := a.Destroy(ctx, plans[a.engine])
		mu.Lock()
		outs[a.engine] = out
		mu.Unlock()
		return nil, err
	})
	return outs, err
}

// DestroyPlans plans destroy on every engine of the project; an engine that cannot be read is
// an error (destroy changes every engine or none).
func (f *Fleet) DestroyPlans(ctx context.Context, opts DestroyOptions) (map[string]*DestroyPlan, error) {
	out := map[string]*DestroyPlan{}
	for _, name := range plan.EngineNames(f.Base.Project) {
		eng := f.Engines[name]
		if eng == nil {
			return nil, fmt.Errorf("engine %s is not connected; nothing was changed", name)
		}
		dp, err := PlanDestroy(ctx, plan.ProjectOn(f.Base.Project, name), eng, opts)
		if err != nil {
			return nil, fmt.Errorf("engine %s: %w; nothing was changed (destroy changes every engine or none)", name, err)
		}
		dp.EngineName = name
		out[name] = dp
	}
	return out, nil
}
