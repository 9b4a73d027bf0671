package memengine_test

import (
	"testing"

	"github.com/deployer-dev/deployer/executor/engine/enginetest"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, func(t *testing.T) enginetest.Fixture {
		eng, err := memengine.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(eng.Close)
		eng.Image("app:1", memengine.App, nil)
		return enginetest.Fixture{Engine: eng, Project: "conformance", App: "app:1"}
	})
}
