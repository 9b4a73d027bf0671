package executor

import (
	"context"
	"errors"
	"fmt"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
)

// owned is what a run makes and checks of the project's own on the engine: the names it
// derives (taken by something else: stop), its volumes, and its network and the addresses on it.
type owned struct{ rn *run }

// nameTaken explains a creation the engine refused because the name is taken (a race with
// the checks before, or something the checks do not see): it names what holds it.
func (own *owned) nameTaken(ctx context.Context, name, what string) error {
	rn := own.rn
	holder := "something else"
	if st, err := rn.Runtime.Inspect(ctx, name); err == nil {
		holder = plan.ContainerOwner(st)
	}
	return fmt.Errorf("the container name %s (%s) is taken by %s: remove or rename it", name, what, holder)
}

// checkOwnership checks, in a run, that the names of the services given and the project's are
// its own (ownership.check), right before it changes anything.
func (own *owned) checkOwnership(ctx context.Context, services []*config.Service) error {
	rn := own.rn
	all, err := rn.Runtime.AllContainers(ctx)
	if err != nil {
		return err
	}
	o := &plan.Ownership{Ctx: ctx, Eng: rn.Runtime, Project: rn.Project, All: all, Proxy: plan.NeedsProxy(rn.Project, !rn.remote())}
	return o.Check(services)
}

// makeVolumes creates the services' volumes that do not exist yet, with the project's labels
// (and shared, as the configuration says), before any container mounts them: the engine
// would make them without. One that exists is kept as it is (ownership.check judged it).
func (own *owned) makeVolumes(ctx context.Context, services []*config.Service) error {
	rn := own.rn
	for _, s := range services {
		for _, v := range s.Volumes {
			if err := own.makeVolume(ctx, v.Name, plan.DataLabels(rn.Project, v)); err != nil {
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
			holder = plan.WhoseLabels(v.Labels)
		}
		return fmt.Errorf("the volume %s was made meanwhile, %s: run plan again", name, holder)
	}
	return err
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
		return fmt.Errorf("a volume named %s exists, %s, that is not service.%s's %s volume: it is left as it is; rename or remove it", name, plan.WhoseLabels(l), service, role)
	}
	return rn.Runtime.RemoveVolume(ctx, name)
}
