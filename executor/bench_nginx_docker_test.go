package executor_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nginxConf fronts one upstream with kept-alive connections, as one would configure nginx in
// front of an app: a worker per core, HTTP/1.1 to the upstream, no access log.
const nginxConf = `
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream app {
    server %[2]s;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:%[3]d;
    client_max_body_size 0;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`

// startNginx runs nginx from Debian's package in front of upstream on a free port.
func startNginx(b *testing.B, upstream string) string {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		b.Skip("nginx is not installed (apt-get install nginx-light)")
	}
	dir := b.TempDir()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, upstream, port)), 0o644)
	cmd := exec.Command(bin, "-c", conf, "-g", "daemon off;")
	if out, err := exec.Command(bin, "-t", "-c", conf).CombinedOutput(); err != nil {
		b.Fatalf("nginx -t: %v: %s", err, out)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr
}

// wrkResult is what wrk measured: requests per second and the median latency.
type wrkResult struct {
	rps float64
	p50 time.Duration
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP50 = regexp.MustCompile(`\s50%\s+([0-9.]+)(us|ms|s)`)
)

// runWrk loads url with 32 kept-alive connections on 2 threads for d; body, when set, is
// POSTed with every request.
func runWrk(b *testing.B, url string, d time.Duration, body int) wrkResult {
	args := []string{"-t2", "-c32", "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}
	if body > 0 {
		script := filepath.Join(b.TempDir(), "post.lua")
		os.WriteFile(script, []byte(fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", %d)\n", body)), 0o644)
		args = append(args, "-s", script)
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v: %s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		b.Logf("wrk %s: %s", url, out)
	}
	var r wrkResult
	if m := wrkRPS.FindSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := wrkP50.FindSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[2])]
		r.p50 = time.Duration(v * float64(unit))
	}
	if r.rps == 0 {
		b.Fatalf("wrk said nothing measurable: %s", out)
	}
	return r
}

// BenchmarkProxyVsNginx measures the deployer's proxy and nginx side by side in one run, in front
// of the same release container: a small response, 2 KiB and 1 MiB responses, and a 1 MiB
// upload, each with 32 kept-alive connections (wrk, from Debian's package), all on 127.0.0.1 and
// the same 2 cores. The release's own address is measured too, for reference.
//
// On two shared cores one 5 s sample of each moves by 10-30% from the next (where the
// scheduler puts wrk, nginx, the proxy and the app), so nginx and the proxy are loaded in
// turn, proxyRounds times 3 s each, and each one's median is what is reported and compared.
func BenchmarkProxyVsNginx(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Skip("wrk is not installed (apt-get install wrk)")
	}
	r, upstream := proxiedRelease(b)
	direct := "http://" + upstream
	nginx := "http://" + startNginx(b, upstream)
	proxy := fmt.Sprintf("http://127.0.0.1:%d", r.port)
	cases := []struct {
		name, path string
		body       int
	}{
		{"small", "/", 0},
		{"2KiB", "/bytes?n=2048", 0},
		{"1MiB", "/bytes?n=1048576", 0},
		{"upload-1MiB", "/upload", 1 << 20},
	}
	const proxyRounds = 5
	d := 3 * time.Second
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, c := range cases {
			res := map[string]wrkResult{"direct": runWrk(b, direct+c.path, d, c.body)}
			var ng, px []wrkResult
			for j := 0; j < proxyRounds; j++ {
				ng = append(ng, runWrk(b, nginx+c.path, d, c.body))
				px = append(px, runWrk(b, proxy+c.path, d, c.body))
			}
			res["nginx"], res["proxy"] = medianWrk(ng), medianWrk(px)
			b.Logf("%s: nginx %s; proxy %s", c.name, wrkRounds(ng), wrkRounds(px))
			for _, t := range []string{"direct", "nginx", "proxy"} {
				b.ReportMetric(res[t].rps, c.name+"-"+t+"-req/s")
				b.ReportMetric(float64(res[t].p50.Microseconds()), c.name+"-"+t+"-p50-us")
			}
			b.ReportMetric(res["proxy"].rps/res["nginx"].rps, c.name+"-proxy/nginx-throughput")
			b.ReportMetric(float64(res["proxy"].p50)/float64(res["nginx"].p50), c.name+"-proxy/nginx-p50")
		}
	}
}

// medianWrk is the median throughput and the median p50 of several rounds.
func medianWrk(rs []wrkResult) wrkResult {
	rps := make([]float64, len(rs))
	p50 := make([]time.Duration, len(rs))
	for i, r := range rs {
		rps[i], p50[i] = r.rps, r.p50
	}
	sort.Float64s(rps)
	sort.Slice(p50, func(i, j int) bool { return p50[i] < p50[j] })
	return wrkResult{rps: rps[len(rps)/2], p50: p50[len(p50)/2]}
}

func wrkRounds(rs []wrkResult) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%.0f/s p50 %v", r.rps, r.p50))
	}
	return strings.Join(parts, ", ")
}
