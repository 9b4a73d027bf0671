package executor

import (
	"context"

	"github.com/deployer-dev/deployer/executor/plan"

	"github.com/deployer-dev/deployer/config"
)

// MakePlan makes the project's plan (Make) with the checks that reach past the engine: the
// backup stores answer, and the routes of the project's proxy.
func MakePlan(ctx context.Context, p *config.Project, eng Engine, opts plan.PlanOptions) (*plan.Plan, error) {
	if opts.CheckStore == nil {
		opts.CheckStore = func(ctx context.Context, p *config.Project, store string) error {
			return checkStore(ctx, p, store, false)
		}
	}
	if opts.ProxyRoutes == nil {
		opts.ProxyRoutes = readProxyRoutes
	}
	return plan.Make(ctx, p, eng, opts)
}
