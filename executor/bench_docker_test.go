package executor_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
)

// BenchmarkApplyOverhead deploys a new release of a small service (restart cutover) per
// iteration and splits the wall time into the time spent waiting for the app to become healthy
// (candidate and verification checks, which the app's start-up decides) and the rest: the
// deployer's own overhead (lock, candidate create/start, cutover, clean-up, engine calls).
func BenchmarkApplyOverhead(b *testing.B) {
	r := newRig(b)
	fast := func(s *config.Service) { s.HealthCheck.Interval, s.HealthCheck.Healthy = 20*time.Millisecond, 1 }
	if so := r.apply(r.config("v0", fast)); so.Error != "" {
		b.Fatal(so.Error)
	}
	var total, waiting time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.events = nil
		start := time.Now()
		if so := r.apply(r.config(fmt.Sprintf("v%d", i+1), fast)); so.Error != "" {
			b.Fatal(so.Error)
		}
		total += time.Since(start)
		for _, e := range r.events {
			if e.Type == executor.EventStep && e.Phase == "end" && (e.Step == executor.StepHealth || e.Step == executor.StepVerify || e.Step == executor.StepRunning) {
				waiting += time.Duration(e.Seconds * float64(time.Second))
			}
		}
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "apply-s/op")
	b.ReportMetric(waiting.Seconds()/float64(b.N), "healthy-wait-s/op")
	b.ReportMetric((total-waiting).Seconds()/float64(b.N), "overhead-s/op")
}

// BenchmarkRestartDowntime sends a steady 200 requests/s to the host port (127.0.0.1, bounded
// by the benchmark's iterations) while each iteration deploys a new release with the restart
// cutover, and reports the failed requests and the longest gap without a successful answer.
func BenchmarkRestartDowntime(b *testing.B) {
	r := newRig(b)
	fast := func(s *config.Service) { s.HealthCheck.Interval, s.HealthCheck.Healthy = 20*time.Millisecond, 1 }
	if so := r.apply(r.config("v0", fast)); so.Error != "" {
		b.Fatal(so.Error)
	}
	var failed, sent int
	var longest time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l := startLoad(r.port, 200)
		time.Sleep(200 * time.Millisecond)
		if so := r.apply(r.config(fmt.Sprintf("v%d", i+1), fast)); so.Error != "" {
			b.Fatal(so.Error)
		}
		time.Sleep(200 * time.Millisecond)
		s, f, gap := l.stop()
		sent, failed = sent+s, failed+f
		longest = max(longest, gap)
	}
	b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
	b.ReportMetric(float64(sent)/float64(b.N), "sent/op")
	b.ReportMetric(float64(longest.Milliseconds()), "longest-gap-ms")
}

// load sends GET / at a fixed rate and records failures and the longest time between two
// successful answers.
type load struct {
	mu      sync.Mutex
	sent    int
	failed  int
	lastOK  time.Time
	longest time.Duration
	done    chan struct{}
	wg      sync.WaitGroup
}

func startLoad(port, rate int) *load {
	l := &load{done: make(chan struct{}), lastOK: time.Now()}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-l.done:
				return
			case <-tick.C:
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
				resp, err := client.Do(req)
				ok := err == nil && resp.StatusCode == 200
				if resp != nil {
					resp.Body.Close()
				}
				now := time.Now()
				l.mu.Lock()
				defer l.mu.Unlock()
				l.sent++
				if !ok {
					l.failed++
					return
				}
				if gap := now.Sub(l.lastOK); gap > l.longest {
					l.longest = gap
				}
				l.lastOK = now
			}()
		}
	}()
	return l
}

func (l *load) stop() (sent, failed int, longest time.Duration) {
	close(l.done)
	l.wg.Wait()
	return l.sent, l.failed, l.longest
}
