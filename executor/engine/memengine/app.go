package memengine

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/deployer-dev/deployer/executor/engine/testapp"
)

// App is the service fast tests deploy, as integration tests deploy testapp: package
// executor/engine/testapp has its switches and behaviours. Run as `exit N` it prints a line and
// exits with N (hooks); as `seed PATH` it writes the database in APP_SEED_DB (base64) to PATH.
func App(ctx context.Context, p *Process) int {
	if len(p.Cmd) == 2 && p.Cmd[0] == "exit" {
		code, _ := strconv.Atoi(p.Cmd[1])
		p.Printf("testapp: exiting with %d", code)
		return code
	}
	if len(p.Cmd) == 2 && p.Cmd[0] == "seed" {
		return seed(p)
	}
	app := testapp.Start(func(k string) string { return p.Env[k] }, func(dir string) string {
		d, _ := p.Path(dir)
		return d
	})
	p.Printf("testapp %s starting in mode %q", app.Version, app.Mode)
	if app.Crashes() {
		p.Printf("testapp: configured to crash: database unreachable")
		return 3
	}
	select {
	case <-time.After(app.StartDelay):
	case <-ctx.Done():
		return 0
	}
	ln, err := p.Listen(app.Port)
	if err != nil {
		p.Printf("testapp: %v", err)
		return 1
	}
	died := make(chan struct{})
	var once sync.Once
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: app.Handler(func() {
		once.Do(func() {
			p.Printf("testapp: dying as configured")
			close(died)
		})
	})}
	go srv.Serve(ln)
	stop := ctx.Done()
	if app.AsShell {
		stop = nil // as PID 1 without a handler: the stop is ignored, only a kill ends it
	}
	select {
	case <-stop:
		select {
		case <-p.Killed(): // a kill cancels the context too: it ends nothing gracefully
			srv.Close()
			return 137
		default:
		}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(c)
		return 0
	case <-died:
		srv.Close()
		return 4
	case <-p.Killed():
		srv.Close()
		return 137
	}
}

// seed writes the database handed over in APP_SEED_DB to the path, as a seed script would.
func seed(p *Process) int {
	db, err := base64.StdEncoding.DecodeString(p.Env["APP_SEED_DB"])
	if err != nil || len(db) == 0 {
		p.Printf("testapp seed: APP_SEED_DB holds no database")
		return 2
	}
	dst, ok := p.Path(p.Cmd[1])
	if !ok {
		p.Printf("testapp seed: %s is on no volume", p.Cmd[1])
		return 1
	}
	if err := os.WriteFile(dst, db, 0o644); err != nil {
		p.Printf("testapp seed: %v", err)
		return 1
	}
	p.Printf("testapp: seeded %s", p.Cmd[1])
	return 0
}
