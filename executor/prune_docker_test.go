package executor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// cleanupStep is the detail of the plan's clean-up step.
func (r *rig) cleanupStep(p *config.Project) string {
	r.t.Helper()
	pl, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	for _, st := range pl.Steps {
		if st.Name == string(plan.StepCleanup) {
			return st.Detail
		}
	}
	return ""
}

// Pruning a release removes its image only when the deployer built or pulled it: an image the
// operator built and tagged on the engine, with no registry to pull it back from, stays. The
// plan's clean-up step says which images go.
func TestPruneKeepsImagesTheOperatorMade(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	dir := t.TempDir()
	dockertest.AppContext(t, dir)
	var tags []string
	for _, v := range []string{"a", "b"} {
		tag := r.project + "-operator:" + v
		if _, err := r.eng.BuildImage(ctx, executor.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: tag, Labels: map[string]string{"made-by": "operator-" + v}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.eng.RemoveImage(context.Background(), tag) })
		tags = append(tags, tag)
	}
	keep1 := func(image string) func(s *config.Service) {
		return func(s *config.Service) { s.Image = image; s.Deploy.KeepReleases = 1 }
	}
	for i, c := range []struct{ v, image string }{{"v1", tags[0]}, {"v2", tags[1]}} {
		if so := r.apply(r.config(c.v, keep1(c.image))); so.Error != "" || so.Release != i+1 {
			t.Fatalf("%s: %+v", c.v, so)
		}
	}
	step := r.cleanupStep(r.config("v3", keep1(tags[1])))
	if !strings.Contains(step, "remove release 1 (") || !strings.Contains(step, "keeping its image "+tags[0]) || !strings.Contains(step, "the deployer did not make it") {
		t.Errorf("clean-up step: %q", step)
	}
	if so := r.apply(r.config("v3", keep1(tags[1]))); so.Error != "" {
		t.Fatal(so.Error)
	}
	if got := r.state(); got != "previous:2:created live:3:running" {
		t.Errorf("containers: %s", got)
	}
	if _, err := r.eng.ImageID(ctx, tags[0]); err != nil {
		t.Errorf("the operator's image was removed with release 1: %v", err)
	}
}

// Images the deployer built go with the releases that are pruned.
func TestPruneRemovesImagesTheDeployerBuilt(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	dir := t.TempDir()
	dockertest.AppContext(t, dir)
	built := func(v string) *config.Project {
		os.WriteFile(filepath.Join(dir, "VERSION"), []byte(v), 0o644) // a new context: a new image
		p := r.config(v, func(s *config.Service) {
			s.Image = r.project + "-app:latest"
			s.Build = config.NewBuild()
			s.Deploy.KeepReleases = 1
		})
		p.Dir = dir
		return p
	}
	var ids []string
	for _, v := range []string{"v1", "v2"} {
		so := r.apply(built(v))
		if so.Error != "" {
			t.Fatalf("%s: %+v", v, so)
		}
		ids = append(ids, so.ImageID)
	}
	t.Cleanup(func() { r.eng.RemoveImage(context.Background(), r.project+"-app:latest") })
	if step := r.cleanupStep(built("v3")); !strings.Contains(step, "remove release 1 (") || !strings.Contains(step, "with its image") {
		t.Errorf("clean-up step: %q", step)
	}
	if so := r.apply(built("v3")); so.Error != "" {
		t.Fatal(so.Error)
	}
	if _, err := r.eng.ImageID(ctx, ids[0]); err == nil {
		t.Error("the image the deployer built for release 1 is still there")
	}
	if _, err := r.eng.ImageID(ctx, ids[1]); err != nil {
		t.Errorf("the image of release 2, kept, is gone: %v", err)
	}
}
