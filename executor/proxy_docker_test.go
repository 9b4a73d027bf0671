package executor_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// proxyRig is a rig whose service uses the proxy cutover.
func proxyRig(t testing.TB) *rig {
	r := newRig(t)
	r.self = staticDeployer(t)
	return r
}

func proxyMode(mod func(s *config.Service)) func(s *config.Service) {
	return func(s *config.Service) {
		s.Deploy.Cutover = "proxy"
		s.Deploy.Drain = 2 * time.Second
		if mod != nil {
			mod(s)
		}
	}
}

func TestProxyCutover(t *testing.T) {
	r := proxyRig(t)
	if so := r.apply(r.config("v1", proxyMode(nil))); so.Error != "" {
		t.Fatal(so.Error)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Fatalf("through the proxy: %q", got)
	}
	since := time.Now()
	if so := r.apply(r.config("v2", proxyMode(nil))); so.Error != "" || so.Release != 2 {
		t.Fatalf("replace: %+v", so)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Fatalf("after the cutover: %q", got)
	}
	// The replace sent the proxy its requests (the routes, the health checks, the drain) on
	// one session: one exec, ended with the apply.
	if execs := proxyExecs(t, r, since); len(execs) != 1 || execs[0] != "/deployer proxy ctl -" {
		t.Errorf("execs into the proxy during the replace: %q (want one session)", execs)
	}
	// A proxy's deployer from before sessions fails on "-" as this one fails on a bad request:
	// the session's reads end at once with what it said, and the deployer falls back to one
	// exec per request.
	if obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project)); obs.Proxy != nil {
		sess, err := r.eng.ExecSession(context.Background(), obs.Proxy.ID, []string{"/deployer", "proxy", "ctl", "{"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(sess)
		sess.Close()
		if len(b) != 0 || err == nil || !strings.Contains(err.Error(), "control request") {
			t.Errorf("a session that fails at once: read %q, %v", b, err)
		}
	}
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	if obs.Proxy == nil || !obs.Proxy.Running() || obs.Services["app"].Live.Release() != 2 || len(obs.Services["app"].Previous) != 1 {
		t.Errorf("state: proxy %v, %s", obs.Proxy, r.state())
	}
	routes, err := executor.ProxyStatus(context.Background(), r.eng, projectOnly(r.project))
	if err != nil || len(routes) != 1 || routes[0].Requests < 2 {
		t.Errorf("proxy status: %+v %v", routes, err)
	}
	// deployer rollback is the same switch.
	so, err := r.applier(r.config("v2", proxyMode(nil))).Rollback(context.Background(), "app", 0)
	if err != nil || so.Error != "" || r.get("/") != "version=v1" {
		t.Fatalf("rollback: %+v %v, serving %q", so, err, r.get("/"))
	}
}

// proxyExecs returns the commands exec'd into the project's proxy since then, once every exec
// there has ended (within 5 s).
func proxyExecs(t testing.TB, r *rig, since time.Time) []string {
	t.Helper()
	ctx := context.Background()
	obs, err := plan.Observe(ctx, r.eng, projectOnly(r.project))
	if err != nil || obs.Proxy == nil {
		t.Fatalf("the proxy: %v %v", obs, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		top, err := r.eng.Client().ContainerTop(ctx, obs.Proxy.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(top.Processes) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left in the proxy: %q", top.Processes)
			break
		}
	}
	msgs, errs := r.eng.Client().Events(ctx, events.ListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Until:   fmt.Sprintf("%d", time.Now().Unix()+1),
		Filters: filters.NewArgs(filters.Arg("type", "container"), filters.Arg("container", obs.Proxy.ID)),
	})
	var out []string
	for {
		select {
		case m := <-msgs:
			if cmd, ok := strings.CutPrefix(string(m.Action), "exec_create: "); ok {
				out = append(out, cmd)
			}
		case err := <-errs:
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			return out
		}
	}
}

// A steady load through consecutive proxy cutovers alternating two releases, with some slow
// requests: none fails, and each answer comes from a release live while it was in flight.
func TestProxyZeroDowntime(t *testing.T) {
	r := proxyRig(t)
	if so := r.apply(r.config("v0", proxyMode(nil))); so.Error != "" {
		t.Fatal(so.Error)
	}
	var mu sync.Mutex
	type answer struct {
		start, end time.Time
		version    string
		err        string
	}
	var answers []answer
	type change struct {
		at      time.Time
		version string
	}
	timeline := []change{{time.Now(), "v0"}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				path := "/"
				if (i+w)%10 == 0 {
					path = fmt.Sprintf("/?sleep_ms=%d", 1000+(i*97)%1000) // 1-2 s
				}
				a := answer{start: time.Now()}
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", r.port, path))
				if err != nil {
					a.err = err.Error()
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					a.version = resp.Header.Get("X-App-Version")
					if resp.StatusCode != 200 {
						a.err = resp.Status
					}
				}
				a.end = time.Now()
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}(w)
	}
	const applies = 20
	for i := 1; i <= applies; i++ {
		v := []string{"v1", "v2"}[i%2]
		p := r.config(v, proxyMode(func(s *config.Service) { s.Deploy.Drain = 3 * time.Second }))
		switchStart := time.Now()
		if so := r.apply(p); so.Error != "" {
			t.Fatalf("apply %d: %s", i, so.Error)
		}
		mu.Lock()
		timeline = append(timeline, change{switchStart, v})
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
	failed := 0
	// The version live at a time: the last change before it; around a change both are valid.
	liveAt := func(t time.Time) (string, string) {
		prev, cur := "", timeline[0].version
		for _, c := range timeline[1:] {
			if c.at.After(t) {
				break
			}
			prev, cur = cur, c.version
		}
		return prev, cur
	}
	wrong := 0
	for _, a := range answers {
		if a.err != "" {
			failed++
			if failed <= 5 {
				t.Errorf("failed request at %s: %s", a.start.Format("15:04:05.000"), a.err)
			}
			continue
		}
		p1, c1 := liveAt(a.start)
		_, c2 := liveAt(a.end)
		if a.version != c1 && a.version != c2 && a.version != p1 {
			wrong++
			if wrong <= 5 {
				t.Errorf("an answer from %s, while %s/%s was live", a.version, c1, c2)
			}
		}
	}
	t.Logf("%d requests through %d proxy cutovers: %d failed, %d from a release not live", len(answers), applies, failed, wrong)
	if len(answers) < 200 {
		t.Errorf("only %d requests were sent", len(answers))
	}
}

// The candidate dies right after the switch: the proxy sends new requests back to the previous
// release, and the deployer rolls back.
func TestProxyCandidateDiesAfterSwitch(t *testing.T) {
	r := proxyRig(t)
	if so := r.apply(r.config("v1", proxyMode(nil))); so.Error != "" {
		t.Fatal(so.Error)
	}
	so := r.apply(r.config("v2", proxyMode(func(s *config.Service) {
		s.Env["APP_DIE_AFTER"] = "2" // the candidate's two health checks, then it dies
		s.HealthCheck.Deadline = 6 * time.Second
	})))
	if !so.RolledBack || so.RolledBackTo != 1 {
		t.Fatalf("outcome: %+v", so)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Fatalf("after the rollback: %q", got)
	}
	if got := r.state(); got != "proxy:0:running live:1:running" {
		t.Errorf("containers: %s", got)
	}
}

// The proxy container killed: the next plan says so, the next apply restores it and its routes.
func TestProxyKilled(t *testing.T) {
	r := proxyRig(t)
	p := r.config("v1", proxyMode(nil))
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	r.eng.RemoveContainer(context.Background(), obs.Proxy.ID)
	if got := r.get("/"); !strings.HasPrefix(got, "error") {
		t.Fatalf("the proxy is gone but %q answers", got)
	}
	pl, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
	if err != nil || len(pl.Leftovers) != 1 || pl.Leftovers[0].Kind != "proxy" {
		t.Fatalf("plan: %+v %v", pl.Leftovers, err)
	}
	if _, err := r.applier(p).Apply(context.Background(), pl); err != nil {
		t.Fatal(err)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Errorf("after apply restored the proxy: %q", got)
	}
}

// A request longer than the drain is cut at the deadline, and the output says how many were.
func TestProxySlowRequestCut(t *testing.T) {
	r := proxyRig(t)
	short := proxyMode(func(s *config.Service) { s.Deploy.Drain = time.Second })
	if so := r.apply(r.config("v1", short)); so.Error != "" {
		t.Fatal(so.Error)
	}
	// The request takes a minute, far longer than the apply however slow the machine: only the
	// drain deadline can end it.
	done := make(chan string, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/?sleep_ms=60000", r.port))
		if err != nil {
			done <- "error"
			return
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprintf("%d %v", resp.StatusCode, err)
	}()
	time.Sleep(300 * time.Millisecond)
	r.events = nil
	if so := r.apply(r.config("v2", short)); so.Error != "" {
		t.Fatal(so.Error)
	}
	warned := false
	for _, e := range r.events {
		warned = warned || e.Type == executor.EventWarning && strings.Contains(e.Detail, "1 request or connection still in flight on the old release at the drain deadline (1s) were cut")
	}
	if !warned {
		t.Error("no warning about the cut request")
	}
	select {
	case got := <-done:
		if strings.HasPrefix(got, "200 <nil>") {
			t.Errorf("the slow request was not cut: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Error("the slow request was not cut: still running 10 s after the apply")
	}
}

func TestProxyHostPortTaken(t *testing.T) {
	r := proxyRig(t)
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r.port = l.Addr().(*net.TCPAddr).Port
	so := r.apply(r.config("v1", proxyMode(nil)))
	if !strings.Contains(so.Error, fmt.Sprintf("host port %d of service.app is held by a process outside Docker", r.port)) {
		t.Errorf("error: %q", so.Error)
	}
	// Found before the proxy is made or any release started: nothing is left.
	if got := r.state(); got != "" {
		t.Errorf("containers left: %s", got)
	}
}

// A new deployer version upgrades the proxy during the next apply: the new proxy takes the port
// over (SO_REUSEPORT) before the old one stops accepting. Under load, nothing fails.
func TestProxyUpgradeUnderLoad(t *testing.T) {
	r := proxyRig(t)
	if so := r.apply(r.config("v1", proxyMode(nil))); so.Error != "" {
		t.Fatal(so.Error)
	}
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	before := obs.Proxy.ImageID
	r.self = otherDeployer(t)
	l := startLoad(r.port, 200)
	time.Sleep(300 * time.Millisecond)
	if so := r.apply(r.config("v2", proxyMode(nil))); so.Error != "" {
		t.Fatal(so.Error)
	}
	time.Sleep(300 * time.Millisecond)
	sent, failed, gap := l.stop()
	obs, _ = plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	if obs.Proxy == nil || obs.Proxy.ImageID == before || obs.Proxy.Name != plan.ProxyName(r.project) || !obs.Proxy.Running() {
		t.Fatalf("the proxy was not upgraded: %+v", obs.Proxy)
	}
	if logs, _ := r.eng.Logs(context.Background(), obs.Proxy.ID, 20); !strings.Contains(logs, "took over the listening sockets of the proxy before this one") {
		t.Errorf("the new proxy opened its own sockets instead of taking over the old one's:\n%s", logs)
	}
	t.Logf("proxy upgrade under 200 req/s: %d sent, %d failed, longest gap %s", sent, failed, gap)
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the proxy upgrade: %s", failed, sent, strings.Join(l.errs, "; "))
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("after the upgrade: %q", got)
	}
}

// A plain TCP port (protocol = "tcp") is switched for new connections the same way. There is no
// HTTP health check for it; the proxy forwards bytes, so HTTP carried over it still shows which
// release answered.
func TestProxyTCPService(t *testing.T) {
	r := proxyRig(t)
	tcp := proxyMode(func(s *config.Service) {
		s.Ports[0].Protocol = "tcp"
		s.HealthCheck = nil
	})
	if so := r.apply(r.config("v1", tcp)); so.Error != "" {
		t.Fatal(so.Error)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Fatalf("through the TCP route: %q", got)
	}
	if so := r.apply(r.config("v2", tcp)); so.Error != "" {
		t.Fatal(so.Error)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("after the switch: %q", got)
	}
	routes, _ := executor.ProxyStatus(context.Background(), r.eng, projectOnly(r.project))
	if len(routes) != 1 || routes[0].Protocol != "tcp" {
		t.Errorf("routes: %+v", routes)
	}
}

// A stopped live release that does not come back healthy when apply starts it: the release
// before it is brought back, so the service does not stay down while a runnable release exists.
func TestResumeUnhealthyRollsBack(t *testing.T) {
	r := proxyRig(t)
	if so := r.apply(r.config("v1", proxyMode(nil))); so.Error != "" {
		t.Fatal(so.Error)
	}
	// v2 is healthy the first time it starts on the volume only (its candidate, which becomes live).
	once := proxyMode(func(s *config.Service) { s.Env["APP_MODE"] = "once"; s.HealthCheck.Deadline = 5 * time.Second })
	if so := r.apply(r.config("v2", once)); so.Error != "" {
		t.Fatal(so.Error)
	}
	r.eng.StopContainer(context.Background(), r.liveID(), time.Second)
	so := r.apply(r.config("v2", once))
	if so.Action != plan.ActionUpdate || !so.RolledBack || so.RolledBackTo != 1 || !strings.Contains(so.Error, "release 2 did not come back healthy") {
		t.Fatalf("outcome: %+v", so)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Errorf("serving %q", got)
	}
}

// A deployer that cannot run on the engine (built for another OS, as on an operator's laptop)
// says how to build one that can; with docker.proxy_image naming such an image, the proxy runs
// from it.
func TestProxyImageFromConfiguration(t *testing.T) {
	r := newRig(t)
	notLinux := filepath.Join(t.TempDir(), "deployer")
	os.WriteFile(notLinux, []byte("\xcf\xfa\xed\xfe a Mach-O binary, say"), 0o755)
	r.self = notLinux
	so := r.apply(r.config("v1", proxyMode(nil)))
	t.Logf("the refusal:\n%s", so.Error)
	for _, want := range []string{"is not a Linux binary", "GOOS=linux GOARCH=", "CGO_ENABLED=0 go build", "docker { proxy_image = ", `cutover = "restart"`} {
		if !strings.Contains(so.Error, want) {
			t.Errorf("error lacks %q:\n%s", want, so.Error)
		}
	}
	if got := r.state(); got != "" {
		t.Errorf("containers after the refusal: %s", got)
	}

	// The image an operator builds as the message says, named in the configuration.
	dir := t.TempDir()
	bin, _ := os.ReadFile(staticDeployer(t))
	os.WriteFile(filepath.Join(dir, "deployer"), bin, 0o755)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY deployer /deployer\nENTRYPOINT [\"/deployer\"]\n"), 0o644)
	tag := r.project + "-proxyimg:1"
	id, err := r.eng.BuildImage(context.Background(), executor.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: tag})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.eng.RemoveImage(context.Background(), id) })
	withImage := func(v string) *config.Project {
		p := r.config(v, proxyMode(nil))
		p.Docker.ProxyImage = tag
		return p
	}
	if so := r.apply(withImage("v1")); so.Error != "" {
		t.Fatal(so.Error)
	}
	if so := r.apply(withImage("v2")); so.Error != "" {
		t.Fatal(so.Error)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("through the proxy: %q", got)
	}
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	if obs.Proxy == nil || obs.Proxy.ImageID != id {
		t.Errorf("the proxy does not run docker.proxy_image (%s): %+v", id, obs.Proxy)
	}
}
