package executor_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
func BenchmarkProxyVsNginx(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Skip("wrk is not installed (apt-get install wrk)")
	}
	r, upstream := proxiedRelease(b)
	targets := []struct{ name, base string }{
		{"direct", "http://" + upstream},
		{"nginx", "http://" + startNginx(b, upstream)},
		{"proxy", fmt.Sprintf("http://127.0.0.1:%d", r.port)},
	}
	cases := []struct {
		name, path string
		body       int
	}{
		{"small", "/", 0},
		{"2KiB", "/bytes?n=2048", 0},
		{"1MiB", "/bytes?n=1048576", 0},
		{"upload-1MiB", "/upload", 1 << 20},
	}
	d := 5 * time.Second
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, c := range cases {
			res := map[string]wrkResult{}
			for _, t := range targets {
				res[t.name] = runWrk(b, t.base+c.path, d, c.body)
				b.ReportMetric(res[t.name].rps, c.name+"-"+t.name+"-req/s")
				b.ReportMetric(float64(res[t.name].p50.Microseconds()), c.name+"-"+t.name+"-p50-us")
			}
			b.ReportMetric(res["proxy"].rps/res["nginx"].rps, c.name+"-proxy/nginx-throughput")
			b.ReportMetric(float64(res["proxy"].p50)/float64(res["nginx"].p50), c.name+"-proxy/nginx-p50")
		}
	}
}
