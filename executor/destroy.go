package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
)

// destroy takes a project down on an engine: what the deployer made for it goes (its releases
// in every role, the proxy and its routes, the project's network, its key, the proxy's state
// volume, the scratch volumes of interrupted backups, the images it built or pulled for the
// releases, and at the end its lock), and what holds data stays: the data volumes the releases
// mount, the safety copies of interrupted migrations, and the backups. With DeleteVolumes the
// data volumes go too, each backed up first; one that a container of anything else mounts stays.

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
func (a *Applier) Destroy(ctx context.Context, dp *plan.DestroyPlan) (*DestroyOutcome, error) {
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
		note(rn.step("", plan.StepDestroyProxy, "", "stop the proxy (its requests in flight finish) and remove it with its routes", func() error {
			for _, px := range []*Container{obs.Proxy, obs.ProxyNext} {
				if px != nil {
					rn.Runtime.StopContainer(ctx, px.ID, plan.ProxyStopGrace)
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
		note(rn.step("", plan.StepDestroyImages, "", fmt.Sprintf("remove %s the deployer made for the releases", plan.Plural(len(dp.Images), "image")), func() error {
			for _, img := range dp.Images {
				if err := rn.Runtime.RemoveImage(ctx, img.ID); err != nil {
					return err
				}
				if _, err := rn.Runtime.ImageID(ctx, img.ID); err == nil {
					out.Kept = append(out.Kept, fmt.Sprintf("image %s: the engine keeps it (a container of something else uses it, or another tag names it)", img.Name))
					continue
				}
				out.Removed++
			}
			return nil
		}))
	}
	if len(dp.Networks) > 0 {
		note(rn.step("", plan.StepDestroyNetwork, "", "remove "+strings.Join(dp.Networks, ", "), func() error {
			for _, n := range dp.Networks {
				if err := rn.Runtime.RemoveNetwork(ctx, n); err != nil {
					return err
				}
				out.Removed++
			}
			return nil
		}))
	}
	if vols := dp.RemovableVolumes(); len(vols) > 0 {
		note(rn.step("", plan.StepDestroyVolumes, "", "remove volumes "+strings.Join(vols, ", "), func() error {
			return rn.removeVolumes(ctx, dp, vols, out)
		}))
	}
	if dp.Key {
		note(rn.step("", plan.StepDestroyKey, "", "remove the project's key", func() error {
			out.Removed++
			return rn.Runtime.RemoveProjectKey(ctx, rn.Project.Name)
		}))
	}
	if len(failed) > 0 {
		return out, fmt.Errorf("destroy did not remove everything: %s; run it again", strings.Join(failed, "; "))
	}
	return out, nil
}

// removeVolumes removes the plan's volumes once the project's containers are gone. A data
// volume that a container of anything else mounts now (made since the plan) stays.
func (rn destroyRun) removeVolumes(ctx context.Context, dp *plan.DestroyPlan, vols []string, out *DestroyOutcome) error {
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
func (rn destroyRun) destroyBackups(ctx context.Context, dp *plan.DestroyPlan, out *DestroyOutcome) error {
	if len(dp.BackUpFirst) == 0 {
		return nil
	}
	obs, err := plan.Observe(ctx, rn.Runtime, rn.Project)
	if err != nil {
		return err
	}
	for _, b := range dp.BackUpFirst {
		var from *Container
		for i := range obs.All {
			if obs.All[i].ID == b.From {
				from = &obs.All[i]
			}
		}
		err := rn.step(b.Service, plan.StepBackup, "", fmt.Sprintf("back up volumes %s before they are deleted", strings.Join(b.Volumes, ", ")), func() error {
			if from == nil {
				return fmt.Errorf("the container %s to back up from is gone since destroy read the engine", plan.Short(b.From))
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
			out.Backups = append(out.Backups, fmt.Sprintf("backup %s of service.%s (%s) in %s", m.ID, s.Name, strings.Join(b.Volumes, ", "), sb.Store))
			return nil
		})
		if err != nil {
			return fmt.Errorf("service.%s: the backup before deleting its volumes failed, so nothing was removed: %w", b.Service, err)
		}
	}
	return nil
}

// backupService is the service a destroy backup is taken as: the configured one's backup
// settings (or the embedded store's defaults) over the volumes the container mounts, with the
// project's stores (and the embedded one).
func (rn destroyRun) backupService(ctx context.Context, b plan.DestroyBackup, from *Container) (*config.Service, *config.Project, error) {
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
	s := config.NewService(b.Service)
	pol := config.NewBackup()
	if cs := rn.Project.Service(b.Service); cs != nil {
		c := *cs
		s = &c
		if cs.Backup != nil {
			bp := *cs.Backup
			pol = &bp
		}
	}
	pol.Store, pol.Volumes, pol.Keep = b.Store, b.Volumes, 0
	s.Backup = pol
	s.Volumes = nil
	for _, m := range st.Spec.Volumes {
		s.Volumes = append(s.Volumes, &config.Volume{Name: m.Name, Target: m.Target})
	}
	var dbs []*config.SQLite
	for _, db := range s.SQLite {
		if plan.Contains(b.Volumes, db.Volume) {
			dbs = append(dbs, db)
		}
	}
	s.SQLite = dbs
	return s, &p, nil
}

// Destroy carries out every engine's destroy plan, under the deploy lock of every engine (taken
// on all of them first, or on none). Each engine's outcome comes back by its name.
func (f *Fleet) Destroy(ctx context.Context, plans map[string]*plan.DestroyPlan) (map[string]*DestroyOutcome, error) {
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
func (f *Fleet) DestroyPlans(ctx context.Context, opts plan.DestroyOptions) (map[string]*plan.DestroyPlan, error) {
	if f.implicit() {
		// The implicit engine's plan is a single engine's: its errors its own.
		eng := f.Engines[plan.Implicit]
		if eng == nil {
			return nil, fmt.Errorf("the engine is not connected; nothing was changed")
		}
		dp, err := plan.PlanDestroy(ctx, f.Base.Project, eng, opts)
		if err != nil {
			return nil, err
		}
		return map[string]*plan.DestroyPlan{plan.Implicit: dp}, nil
	}
	out := map[string]*plan.DestroyPlan{}
	for _, name := range plan.EngineNames(f.Base.Project) {
		eng := f.Engines[name]
		if eng == nil {
			return nil, fmt.Errorf("engine %s is not connected; nothing was changed", name)
		}
		dp, err := plan.PlanDestroy(ctx, plan.ProjectOn(f.Base.Project, name), eng, opts)
		if err != nil {
			return nil, fmt.Errorf("engine %s: %w; nothing was changed (destroy changes every engine or none)", name, err)
		}
		dp.EngineName = name
		out[name] = dp
	}
	return out, nil
}
