package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// testProject is a project of one service, api, on the host port given (a free one: the
// plan checks that nothing else holds it).
func testProject(name, image string, port int, env map[string]string) *config.Project {
	s := config.NewService("api")
	s.Image = image
	s.Env = env
	pb := config.NewPort()
	pb.Container, pb.Host = 8080, port
	s.Ports = []*config.Port{pb}
	p := &config.Project{Name: name, Services: []*config.Service{s}, Sensitive: map[string]bool{}}
	config.Defaults(p)
	return p
}

// createReleased creates a container labelled as apply labels a release of the service.
func createReleased(t *testing.T, eng *docker.Engine, p *config.Project, service, role string, release int, start bool) string {
	t.Helper()
	ctx := context.Background()
	s := p.Service(service)
	imageID, err := eng.ImageID(ctx, s.Image)
	if err != nil {
		t.Fatal(err)
	}
	doc := plan.SpecDoc(p, s, dockertest.Hasher(t, eng, p.Name))
	raw, _ := json.Marshal(doc)
	// The names the deployer gives them: a container is a release of the service only under one.
	name := s.ContainerName
	switch role {
	case plan.RoleCandidate:
		name = s.ContainerName + "-green"
	case plan.RolePrevious:
		name = fmt.Sprintf("%s-r%d", s.ContainerName, release)
	}
	id, err := eng.CreateContainer(ctx, executor.ContainerSpec{
		Name: name, Image: s.Image, Env: s.Env,
		Labels: map[string]string{
			plan.LabelProject: p.Name, plan.LabelService: service, plan.LabelRole: role,
			plan.LabelRelease: fmt.Sprint(release), plan.LabelSpecDoc: string(raw),
			plan.LabelSpec: plan.SpecHash(doc, imageID),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if start {
		if err := eng.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func TestPlanAgainstEngine(t *testing.T) {
	eng := dockertest.Engine(t)
	name := dockertest.Project(t, eng)
	image := dockertest.AppImage(t, eng)
	ctx := context.Background()
	port := dockertest.FreePort(t)
	p := testProject(name, image, port, map[string]string{"APP_VERSION": "v1"})

	pl, err := executor.MakePlan(ctx, p, eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ch := pl.Change("api"); ch.Action != plan.ActionCreate || ch.NextRelease != 1 {
		t.Fatalf("empty engine: %+v", ch)
	}

	liveID := createReleased(t, eng, p, "api", plan.RoleLive, 4, true)
	pl, err = executor.MakePlan(ctx, p, eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pl.HasChanges() {
		t.Fatalf("a live release matching the configuration must plan no changes: %+v", pl.Changes[0])
	}

	changed := testProject(name, image, port, map[string]string{"APP_VERSION": "v2"})
	pl, err = executor.MakePlan(ctx, changed, eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ch := pl.Change("api")
	if ch.Action != plan.ActionReplace || ch.LiveRelease != 4 || ch.NextRelease != 5 {
		t.Fatalf("changed env: %+v", ch)
	}
	if len(ch.Attributes) != 1 || ch.Attributes[0].Path != "env.APP_VERSION" || string(ch.Attributes[0].Old) != `"v1"` {
		t.Errorf("attributes: %+v", ch.Attributes)
	}

	if err := eng.StopContainer(ctx, liveID, 0); err != nil {
		t.Fatal(err)
	}
	createReleased(t, eng, p, "api", plan.RoleCandidate, 5, false)
	other := testProject(name, image, port, nil)
	other.Services[0].Name, other.Services[0].ContainerName = "worker", name+"-worker"
	createReleased(t, eng, other, "worker", plan.RoleLive, 1, false)

	pl, err = executor.MakePlan(ctx, p, eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ch := pl.Change("api"); ch.Action != plan.ActionUpdate {
		t.Errorf("stopped live: %+v", ch)
	}
	if ch := pl.Change("worker"); ch == nil || ch.Action != plan.ActionDelete {
		t.Errorf("service gone from the configuration: %+v", ch)
	}
	var kinds []string
	for _, l := range pl.Leftovers {
		kinds = append(kinds, string(l.Kind))
	}
	if got := strings.Join(kinds, ","); got != "candidate,stopped-live" {
		t.Errorf("leftovers %q", got)
	}
}

func TestPlanEngineNotAnswering(t *testing.T) {
	port := dockertest.FreePort(t)
	eng, err := docker.New(fmt.Sprintf("tcp://127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	_, err = executor.MakePlan(context.Background(), testProject("x", "x", dockertest.FreePort(t), nil), eng, plan.PlanOptions{})
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("err = %v", err)
	}
}
