package executor_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// fixedKey is an engine whose project key is whatever the test says (a hostile or broken engine).
type fixedKey struct {
	*memengine.Engine
	key []byte
}

func (f fixedKey) ProjectKey(context.Context, string) ([]byte, error) { return f.key, nil }

// ReadProjectKey is what plan reads (it makes no key): the same key.
func (f fixedKey) ReadProjectKey(context.Context, string) ([]byte, error) { return f.key, nil }

// A project key that is no random key (32 zero bytes, too short, one byte repeated) is refused
// by plan and apply with an error that says what to do: hashes of sensitive values under it
// could be checked against guesses offline. A random key passes (every other test).
func TestDegenerateProjectKeyRefused(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	for name, key := range map[string][]byte{
		"32 zero bytes": make([]byte, 32),
		"one byte":      bytes.Repeat([]byte{0x5a}, 32),
		"too short":     []byte("0123456789"),
		"empty":         {},
		"two bytes":     bytes.Repeat([]byte{1, 2}, 16),
	} {
		t.Run(name, func(t *testing.T) {
			eng := fixedKey{r.eng, key}
			p := r.config("v1", nil)
			_, err := executor.MakePlan(context.Background(), p, eng, plan.PlanOptions{})
			if err == nil || !strings.Contains(err.Error(), "is not a random key") || !strings.Contains(err.Error(), r.project+"-deployer-key") {
				t.Fatalf("plan: %v", err)
			}
			a := r.applier(p)
			a.Runtime = eng
			if _, err := a.Apply(context.Background(), r.plan(p)); err == nil || !strings.Contains(err.Error(), "is not a random key") {
				t.Errorf("apply: %v", err)
			}
		})
	}
}
