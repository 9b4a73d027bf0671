package executor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// BenchmarkMemApply is BenchmarkApplyOverhead on the in-memory engine: a replace per iteration
// (plan, lock, candidate, health check, cutover, verification, clean-up, unlock) where the engine
// costs next to nothing, so what is left is the deployer's own work and the app's answers.
func BenchmarkMemApply(b *testing.B) {
	for _, cutover := range []config.Cutover{config.CutoverRestart, config.CutoverProxy} {
		b.Run(string(cutover), func(b *testing.B) {
			r := newMemRig(b, cutover)
			fast := func(s *config.Service) {
				s.HealthCheck.Interval, s.HealthCheck.Healthy = 5*time.Millisecond, 1
				s.Hooks, s.Backup = nil, nil
			}
			if so := r.apply(r.config("v0", fast)); so.Error != "" {
				b.Fatal(so.Error)
			}
			var waiting time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.steps()
				if so := r.apply(r.config(fmt.Sprintf("v%d", i+1), fast)); so.Error != "" {
					b.Fatal(so.Error)
				}
				for _, e := range r.events {
					if e.Type == executor.EventStep && e.Phase == "end" && (e.Step == string(plan.StepHealth) || e.Step == string(plan.StepVerify) || e.Step == string(plan.StepRunning)) {
						waiting += time.Duration(e.Seconds * float64(time.Second))
					}
				}
			}
			b.ReportMetric(waiting.Seconds()/float64(b.N), "s-waiting/op")
		})
	}
}
