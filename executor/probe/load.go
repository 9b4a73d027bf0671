package probe

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Load is a short smoke load: GETs of Paths under Base, Concurrency at once, until Requests
// were sent or Duration passed (whichever comes first; a zero one does not bound).
type Load struct {
	Base        string        `json:"base"` // "http://10.0.0.3:5000"
	Paths       []string      `json:"paths"`
	Requests    int           `json:"requests,omitempty"`
	Duration    time.Duration `json:"duration,omitempty"`
	Concurrency int           `json:"concurrency"`
	Timeout     time.Duration `json:"timeout,omitempty"` // of one request; default 10s
}

// LoadResult is what a load measured. A request fails on a transport error or a status of
// 500 and above (a 404 is an answer: canaries check content).
type LoadResult struct {
	Requests  int           `json:"requests"`
	Failed    int           `json:"failed"`
	Seconds   float64       `json:"seconds"`
	P50       time.Duration `json:"p50"`
	P95       time.Duration `json:"p95"`
	Max       time.Duration `json:"max"`
	FirstFail string        `json:"first_failure,omitempty"` // what the first failed request got
}

// ErrorRate is the fraction of requests that failed.
func (r *LoadResult) ErrorRate() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.Failed) / float64(r.Requests)
}

// String is the load's figures as the deploy output shows them.
func (r *LoadResult) String() string {
	rate := 0.0
	if r.Seconds > 0 {
		rate = float64(r.Requests) / r.Seconds
	}
	return fmt.Sprintf("%d requests in %.1fs (%.0f/s), %d failed (%.2f%%), p50 %s, p95 %s, max %s",
		r.Requests, r.Seconds, rate, r.Failed, 100*r.ErrorRate(), ms(r.P50), ms(r.P95), ms(r.Max))
}

func ms(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// Run sends the load and measures it. It stops when ctx ends, with what it measured so far.
func (l Load) Run(ctx context.Context) *LoadResult {
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if l.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.Duration)
		defer cancel()
	}
	workers := max(l.Concurrency, 1)
	// Kept-alive connections, as browsers and other services hold them: the smoke measures the
	// app, not the cost of a new connection per request.
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: workers},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	var (
		mu        sync.Mutex
		next      int
		latencies []time.Duration
		res       = &LoadResult{}
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil || (l.Requests > 0 && next >= l.Requests) {
			return 0, false
		}
		next++
		return next - 1, true
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, ok := take()
				if !ok {
					return
				}
				url := strings.TrimSuffix(l.Base, "/") + l.Paths[n%len(l.Paths)]
				t0 := time.Now()
				why := get(ctx, client, url)
				d := time.Since(t0)
				if why != "" && ctx.Err() != nil && l.Duration > 0 {
					return // cut by the duration's end: not the app's failure
				}
				mu.Lock()
				res.Requests++
				latencies = append(latencies, d)
				if why != "" {
					res.Failed++
					if res.FirstFail == "" {
						res.FirstFail = "GET " + l.Paths[n%len(l.Paths)] + ": " + why
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	if n := len(latencies); n > 0 {
		res.P50, res.P95, res.Max = latencies[(n-1)/2], latencies[(n*95+99)/100-1], latencies[n-1]
	}
	return res
}

// get makes one request of the load; "" when it was answered below 500.
func get(ctx context.Context, client *http.Client, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("User-Agent", "deployer-smoke")
	resp, err := client.Do(req)
	if err != nil {
		return simplify(err).Error()
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Sprintf("status %d", resp.StatusCode)
	}
	return ""
}
