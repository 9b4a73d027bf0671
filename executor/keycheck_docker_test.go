package executor_test

import (
	"context"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/volume"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// On the real engine: a key volume of the project whose label holds 32 zero bytes (a broken or
// hostile engine) stops plan, naming the volume and what to do.
func TestDegenerateProjectKeyOnDocker(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	cli := r.eng.Client()
	key := r.project + "-deployer-key"
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: key, Labels: map[string]string{plan.LabelProject: r.project, "deployer.key": strings.Repeat("00", 32)}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.VolumeRemove(context.Background(), key, false) })
	_, err := executor.MakePlan(ctx, r.config("v1", nil), r.eng, plan.PlanOptions{})
	if err == nil || !strings.Contains(err.Error(), "is not a random key") || !strings.Contains(err.Error(), "docker volume rm "+key) {
		t.Fatalf("plan with a key of zeros: %v", err)
	}
}
