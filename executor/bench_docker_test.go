package executor_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// BenchmarkApplyOverhead deploys a new release of a small service (restart cutover) per
// iteration and splits the wall time into the time spent waiting for the app to become healthy
// (candidate and verification checks, which the app's start-up decides) and the rest: the
// deployer's own overhead (lock, candidate create/start, cutover, clean-up, engine calls).
func BenchmarkApplyOverhead(b *testing.B) {
	for _, cutover := range []string{"restart", "proxy"} {
		b.Run(cutover, func(b *testing.B) {
			r := newRig(b)
			if cutover == "proxy" {
				r.self = staticDeployer(b)
			}
			fast := func(s *config.Service) {
				s.HealthCheck.Interval, s.HealthCheck.Healthy = 20*time.Millisecond, 1
				s.Deploy.Cutover = config.Cutover(cutover)
			}
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
					if e.Type != executor.EventStep || e.Phase != "end" {
						continue
					}
					if testing.Verbose() { // -v: each step's time, to see where it goes
						b.Logf("%-20s %.3fs", e.Service+" "+e.Step, e.Seconds)
					}
					if e.Step == string(plan.StepHealth) || e.Step == string(plan.StepVerify) || e.Step == string(plan.StepRunning) {
						waiting += time.Duration(e.Seconds * float64(time.Second))
					}
				}
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "apply-s/op")
			b.ReportMetric(waiting.Seconds()/float64(b.N), "healthy-wait-s/op")
			b.ReportMetric((total-waiting).Seconds()/float64(b.N), "overhead-s/op")
		})
	}
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
	downtime(b, r.port, func(i int) {
		if so := r.apply(r.config(fmt.Sprintf("v%d", i+1), fast)); so.Error != "" {
			b.Fatal(so.Error)
		}
	})
}

// load sends GET / at a fixed rate and records failures and the longest time between two
// successful answers.
type load struct {
	mu      sync.Mutex
	sent    int
	failed  int
	errs    []string // the first few failures, to say what they were
	lastOK  time.Time
	longest time.Duration
	done    chan struct{}
	wg      sync.WaitGroup
}

func startLoad(port, rate int) *load {
	l := &load{done: make(chan struct{}), lastOK: time.Now()}
	// A request counts as failed when it gets an error or a status other than 200, or no answer
	// within 5 s; slower answers show in the longest gap.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
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
					if len(l.errs) < 5 {
						if err == nil {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
						l.errs = append(l.errs, fmt.Sprintf("%s: %v", now.Format("15:04:05.000"), err))
					}
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

// BenchmarkProxyDowntime is BenchmarkRestartDowntime with the proxy cutover.
func BenchmarkProxyDowntime(b *testing.B) {
	r := newRig(b)
	r.self = staticDeployer(b)
	mode := func(s *config.Service) {
		s.HealthCheck.Interval, s.HealthCheck.Healthy = 20*time.Millisecond, 1
		s.Deploy.Cutover, s.Deploy.Drain = "proxy", 2*time.Second
	}
	if so := r.apply(r.config("v0", mode)); so.Error != "" {
		b.Fatal(so.Error)
	}
	downtime(b, r.port, func(i int) {
		if so := r.apply(r.config(fmt.Sprintf("v%d", i+1), mode)); so.Error != "" {
			b.Fatal(so.Error)
		}
	})
}

// BenchmarkComposeDowntime measures `docker-compose up -d --force-recreate` of a new version of
// the same app under the same load, when docker-compose is installed.
func BenchmarkComposeDowntime(b *testing.B) {
	if _, err := exec.LookPath("docker-compose"); err != nil {
		b.Skip("docker-compose is not installed")
	}
	r := newRig(b)
	dir := b.TempDir()
	write := func(v string) {
		y := fmt.Sprintf("version: \"3\"\nservices:\n  app:\n    image: %s\n    environment:\n      APP_VERSION: %s\n    ports:\n      - \"%d:8080\"\n", r.image, v, r.port)
		os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(y), 0o644)
	}
	compose := func(args ...string) {
		cmd := exec.Command("docker-compose", append([]string{"-p", r.project}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("docker-compose %v: %v: %s", args, err, out)
		}
	}
	write("v0")
	compose("up", "-d")
	b.Cleanup(func() { compose("down") })
	for i := 0; i < 100 && !strings.HasPrefix(r.get("/"), "version="); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	downtime(b, r.port, func(i int) {
		write(fmt.Sprintf("v%d", i+1))
		compose("up", "-d", "--force-recreate")
		for j := 0; j < 100 && !strings.HasPrefix(r.get("/"), fmt.Sprintf("version=v%d", i+1)); j++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// BenchmarkProxyUpgrade is BenchmarkProxyDowntime where every apply also upgrades the proxy:
// two builds of the deployer take turns, so each apply replaces the proxy container.
func BenchmarkProxyUpgrade(b *testing.B) {
	r := newRig(b)
	builds := []string{staticDeployer(b), otherDeployer(b)}
	mode := func(s *config.Service) {
		s.HealthCheck.Interval, s.HealthCheck.Healthy = 20*time.Millisecond, 1
		s.Deploy.Cutover, s.Deploy.Drain = "proxy", 2*time.Second
	}
	r.self = builds[0]
	if so := r.apply(r.config("v0", mode)); so.Error != "" {
		b.Fatal(so.Error)
	}
	downtime(b, r.port, func(i int) {
		r.self = builds[(i+1)%2]
		if so := r.apply(r.config(fmt.Sprintf("v%d", i+1), mode)); so.Error != "" {
			b.Fatal(so.Error)
		}
	})
}

// downtime runs deploy once per iteration under a steady 200 requests/s and reports failures
// and the longest gap without an answer.
func downtime(b *testing.B, port int, deploy func(i int)) {
	var failed, sent int
	var longest time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l := startLoad(port, 200)
		time.Sleep(200 * time.Millisecond)
		deploy(i)
		time.Sleep(200 * time.Millisecond)
		s, f, gap := l.stop()
		sent, failed = sent+s, failed+f
		longest = max(longest, gap)
	}
	b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
	b.ReportMetric(float64(sent)/float64(b.N), "sent/op")
	b.ReportMetric(float64(longest.Milliseconds()), "longest-gap-ms")
}

// BenchmarkProxyOverhead compares requests through the proxy with requests straight to the
// release's address on the project network: latency of sequential keep-alive requests (p50,
// p99) and throughput with 32 concurrent clients, all on 127.0.0.1 and the same 2 cores.
func BenchmarkProxyOverhead(b *testing.B) {
	r, upstream := proxiedRelease(b)
	direct := fmt.Sprintf("http://%s/", upstream)
	proxied := fmt.Sprintf("http://127.0.0.1:%d/", r.port)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 5 * time.Second}
	get := func(url string) {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	latency := func(url string) (time.Duration, time.Duration) {
		var d []time.Duration
		for i := 0; i < 3000; i++ {
			start := time.Now()
			get(url)
			d = append(d, time.Since(start))
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2], d[len(d)*99/100]
	}
	throughput := func(url string) float64 {
		var n atomic.Int64
		deadline := time.Now().Add(3 * time.Second)
		var wg sync.WaitGroup
		for w := 0; w < 32; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					get(url)
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / 3
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dp50, dp99 := latency(direct)
		pp50, pp99 := latency(proxied)
		dt, pt := throughput(direct), throughput(proxied)
		b.ReportMetric(float64(dp50.Microseconds()), "direct-p50-us")
		b.ReportMetric(float64(dp99.Microseconds()), "direct-p99-us")
		b.ReportMetric(float64(pp50.Microseconds()), "proxy-p50-us")
		b.ReportMetric(float64(pp99.Microseconds()), "proxy-p99-us")
		b.ReportMetric(dt, "direct-req/s")
		b.ReportMetric(pt, "proxy-req/s")
	}
}

// proxiedRelease deploys the app behind the proxy and returns its rig and the live release's
// own address on the project network.
func proxiedRelease(b *testing.B) (*rig, string) {
	r := newRig(b)
	r.self = staticDeployer(b)
	if so := r.apply(r.config("v1", func(s *config.Service) { s.Deploy.Cutover = "proxy" })); so.Error != "" {
		b.Fatal(so.Error)
	}
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	live, _ := r.eng.Inspect(context.Background(), obs.Services["app"].Live.ID)
	return r, live.IPs[plan.NetworkName(r.project)] + ":8080"
}
