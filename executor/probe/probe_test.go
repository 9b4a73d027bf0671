package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// When the overall deadline cuts an attempt short, the error reports what the service last
// answered in full, not "no answer": the operator needs the 503 and its body to see why.
func TestUntilReportsLastFullAnswer(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			http.Error(w, "db locked", http.StatusServiceUnavailable)
			return
		}
		select { // later attempts hang until the client gives up
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()

	c := Check{URL: srv.URL, Timeout: 2 * time.Second}
	err := Until(context.Background(), c, 10*time.Millisecond, 1, 300*time.Millisecond, nil)
	if err == nil {
		t.Fatal("an unhealthy service passed")
	}
	msg := err.Error()
	if !strings.Contains(msg, "503") || !strings.Contains(msg, "db locked") || !strings.Contains(msg, "after 1 attempts") {
		t.Errorf("error: %s", msg)
	}
}

// An attempt that times out on its own says so, with the per-attempt timeout.
func TestGetTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	r := Get(context.Background(), Check{URL: srv.URL, Timeout: 100 * time.Millisecond})
	if r.Err == nil || r.Err.Error() != "no answer within 100ms" {
		t.Errorf("result: %+v", r)
	}
}

func TestUntilPasses(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	c := Check{URL: srv.URL, Timeout: time.Second}
	if err := Until(context.Background(), c, 5*time.Millisecond, 2, 5*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 4 {
		t.Errorf("attempts: %d, want 4 (2 failing, then 2 healthy in a row)", got)
	}
}
