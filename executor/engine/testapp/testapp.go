// Package testapp is the service tests deploy: the behaviours that the integration tests' image
// (executor/docker/dockertest/testapp) and the in-memory engine's App share. Switches in its
// environment make it healthy, unhealthy, crash at start, or slow to start:
//
//	APP_MODE=healthy|unhealthy|crash|slow|once   (default healthy)
//	APP_START_DELAY=2s                      (slow: wait before listening)
//	APP_DATA=/data                          (append "started VERSION" to /data/history; GET /history)
//	APP_VERSION=v2                          (returned by / and the X-App-Version header)
//	APP_PORT=8080
//	APP_DIE_AFTER=N                         (exit on request N+1, without answering it)
//	APP_HEALTH_FAIL_AFTER=N                 (/health answers 500 after N health checks; / goes on)
//	APP_AS_SHELL=1                          (as PID 1, ignore SIGTERM, as a shell script does)
//
// In mode once the app is healthy only when it is the first of its version to start on the data
// volume: a candidate passes, the live release started after it fails, as after a bad cutover.
package testapp

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var filler = []byte(strings.Repeat("0123456789abcdef", 4096))

// App is one start of the app.
type App struct {
	Mode, Version string
	Port          int
	StartDelay    time.Duration
	DieAfter      int64
	HealthyFor    int64 // health checks answered ok before /health fails; 0: no limit
	AsShell       bool
	history       string // the history file, "" without data
	unhealthy     bool
	served        atomic.Int64
	checked       atomic.Int64
}

// Start reads the app's switches from its environment and records the start in its data
// directory (dataDir maps the APP_DATA path to a directory, "" to skip).
func Start(getenv func(string) string, dataDir func(string) string) *App {
	a := &App{Mode: getenv("APP_MODE"), Version: getenv("APP_VERSION"), AsShell: getenv("APP_AS_SHELL") != ""}
	a.Port, _ = strconv.Atoi(getenv("APP_PORT"))
	if a.Port == 0 {
		a.Port = 8080
	}
	if a.Mode == "slow" {
		a.StartDelay, _ = time.ParseDuration(getenv("APP_START_DELAY"))
	}
	a.DieAfter, _ = strconv.ParseInt(getenv("APP_DIE_AFTER"), 10, 64)
	a.HealthyFor, _ = strconv.ParseInt(getenv("APP_HEALTH_FAIL_AFTER"), 10, 64)
	a.unhealthy = a.Mode == "unhealthy"
	if data := getenv("APP_DATA"); data != "" {
		if dir := dataDir(data); dir != "" {
			a.record(dir)
		}
	}
	return a
}

// record appends the start to the history; in mode once, a second start of the version is
// unhealthy.
func (a *App) record(dir string) {
	a.history = filepath.Join(dir, "history")
	marker := filepath.Join(dir, "started-"+a.Version)
	if _, err := os.Stat(marker); err == nil && a.Mode == "once" {
		a.unhealthy = true
	}
	os.WriteFile(marker, nil, 0o644)
	if f, err := os.OpenFile(a.history, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		fmt.Fprintf(f, "started %s\n", a.Version)
		f.Close()
	}
}

// Crashes reports whether the app is configured to crash at start.
func (a *App) Crashes() bool { return a.Mode == "crash" }

// Handler serves /health, /history and / (the version; ?sleep_ms=N waits first). After
// APP_DIE_AFTER requests, die is called instead of answering.
func (a *App) Handler(die func()) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if a.unhealthy {
			http.Error(w, "db locked", http.StatusInternalServerError)
			return
		}
		if a.HealthyFor > 0 && a.checked.Add(1) > a.HealthyFor {
			http.Error(w, "health failing after "+strconv.FormatInt(a.HealthyFor, 10)+" checks", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/history", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(a.history)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	// /bytes?n=N answers N bytes; /upload reads the request's body and says how long it was:
	// for the proxy's benchmarks.
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		n = min(max(n, 0), 64<<20)
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(filler[:min(n, len(filler))])
		for n -= len(filler); n > 0; n -= len(filler) {
			w.Write(filler[:min(n, len(filler))])
		}
	})
	// /status?code=N answers with that status: a path for a smoke load to fail on.
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil || code < 200 || code > 599 {
			code = http.StatusOK
		}
		w.WriteHeader(code)
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if ms, err := strconv.Atoi(r.URL.Query().Get("sleep_ms")); err == nil {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		w.Header().Set("X-App-Version", a.Version)
		fmt.Fprintf(w, "version=%s\n", a.Version)
	})
	if a.DieAfter <= 0 {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.served.Add(1) > a.DieAfter {
			die()
			panic(http.ErrAbortHandler)
		}
		mux.ServeHTTP(w, r)
	})
}
