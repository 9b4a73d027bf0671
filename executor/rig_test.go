package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/notify"
	"github.com/deployer-dev/deployer/executor/plan"
)

// What both rigs (the real engine's and the in-memory one's) look at as a user would.

// getPath returns the body of GET path on 127.0.0.1:port, or the error.
func getPath(port int, path string) string {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// releaseState lists a project's containers (only the services' when servicesOnly) as
// "role:release:state", oldest release first; the live release is the one bearing the live name.
func releaseState(t testing.TB, eng executor.Engine, project string, servicesOnly bool) string {
	obs, err := plan.Observe(context.Background(), eng, projectOnly(project))
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for i := len(obs.All) - 1; i >= 0; i-- {
		c := obs.All[i]
		if servicesOnly && c.Service() == "" {
			continue
		}
		role := c.Role() // as created
		if st := obs.Services[c.Service()]; st != nil && st.Live != nil && st.Live.ID == c.ID {
			role = plan.RoleLive
		}
		parts = append(parts, fmt.Sprintf("%s:%d:%s", role, c.Release(), c.State))
	}
	return strings.Join(parts, " ")
}

// noticeSink is a webhook that keeps the notices it receives: its URL, and what it got so far.
func noticeSink(t testing.TB) (url string, got func() []notify.Notice) {
	var mu sync.Mutex
	var notices []notify.Notice
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var n notify.Notice
		json.NewDecoder(req.Body).Decode(&n)
		mu.Lock()
		notices = append(notices, n)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []notify.Notice {
		mu.Lock()
		defer mu.Unlock()
		return append([]notify.Notice(nil), notices...)
	}
}
