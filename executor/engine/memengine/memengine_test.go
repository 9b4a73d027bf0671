package memengine_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/engine/enginetest"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, func(t *testing.T) enginetest.Fixture {
		eng, err := memengine.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(eng.Close)
		eng.Image("app:1", memengine.App, nil)
		// The engine's containers listen on loopback addresses of this machine, where
		// something may hold the app's default port on all addresses (the quickstart's proxy
		// holds *:8080): the app gets a port nothing holds.
		return enginetest.Fixture{Engine: eng, Project: "conformance", App: "app:1", AppPort: freePort(t)}
	})
}

// freePort is a TCP port that nothing listens on, on any address, right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Something outside the engine listens on all addresses on the port a container's app wants
// (the quickstart's proxy on *:8080, beside a test's app on 8080): the app cannot listen and
// says why, and the container's published port never reaches the outsider, as a real engine's
// published port never leaves its container.
func TestPortHeldOutside(t *testing.T) {
	outside, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	go http.Serve(outside, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from outside")
	}))
	port := outside.Addr().(*net.TCPAddr).Port

	eng, err := memengine.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	eng.Image("app:1", memengine.App, nil)
	ctx := context.Background()
	id, err := eng.CreateContainer(ctx, engine.ContainerSpec{Name: "held-web", Image: "app:1",
		Env:   map[string]string{"APP_VERSION": "v1", "APP_PORT": strconv.Itoa(port)},
		Ports: []engine.PortBinding{{Container: port, HostIP: "127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if code, err := eng.Wait(ctx, id); err != nil || code != 1 {
		t.Errorf("the app on a port held outside: exit %d %v, want 1", code, err)
	}
	logs, _ := eng.Logs(ctx, id, 5)
	if !strings.Contains(logs, fmt.Sprintf("listens on port %d on all addresses", port)) {
		t.Errorf("the app's logs do not say why it cannot listen: %q", logs)
	}

	// A container that answers on another port, with the held one published too: a request
	// to the held one is closed, never answered by the outsider.
	own := freePort(t)
	id, err = eng.CreateContainer(ctx, engine.ContainerSpec{Name: "held-web2", Image: "app:1",
		Env:   map[string]string{"APP_VERSION": "v2", "APP_PORT": strconv.Itoa(own)},
		Ports: []engine.PortBinding{{Container: own, HostIP: "127.0.0.1"}, {Container: port, HostIP: "127.0.0.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, err := eng.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	get := func(p int) (string, error) {
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", p))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)), nil
	}
	var body string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if body, err = get(st.Ports[own]); err == nil {
			break
		}
	}
	if body != "version=v2" {
		t.Fatalf("the container's own port: %q %v", body, err)
	}
	if body, err := get(st.Ports[port]); err == nil {
		t.Errorf("the published port the app does not listen on answered %q: it reached past the container", body)
	}
}
