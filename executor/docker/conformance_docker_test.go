package docker_test

import (
	"testing"

	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/engine/enginetest"
)

// The real engine passes the engine port's conformance suite, as the in-memory one does.
func TestConformance(t *testing.T) {
	enginetest.Run(t, func(t *testing.T) enginetest.Fixture {
		eng := dockertest.Engine(t)
		return enginetest.Fixture{Engine: eng, Project: dockertest.Project(t, eng), App: dockertest.AppImage(t, eng)}
	})
}
