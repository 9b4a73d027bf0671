// Command testapp is the service that integration tests deploy. Environment switches make it
// healthy, unhealthy, crash at start, or slow to start:
//
//	APP_MODE=healthy|unhealthy|crash|slow|once   (default healthy)
//	APP_START_DELAY=2s                      (slow: wait before listening)
//	APP_DATA=/data                          (append "started VERSION" to /data/history; GET /history)
//
// In mode once the app is healthy only when it is the first of its version to start on the data
// volume: a candidate passes, the live release started after it fails, as after a bad cutover.
//
//	APP_VERSION=v2                          (returned by / and the X-App-Version header)
//	APP_PORT=8080
//	APP_DIE_AFTER=N                         (exit on request N+1, without answering it)
//	APP_AS_SHELL=1                          (as PID 1, ignore SIGTERM, as a shell script does)
//
// Run as `testapp exit N` it prints a line and exits with N, for hooks and one-off containers; as
// `testapp seed PATH` it writes the SQLite file in APP_SEED_DB (base64) to PATH.
package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "seed" {
		// Write the database handed over in APP_SEED_DB (base64) to the path, as a seed script would.
		db, err := base64.StdEncoding.DecodeString(os.Getenv("APP_SEED_DB"))
		if err != nil || len(db) == 0 {
			fmt.Fprintln(os.Stderr, "testapp seed: APP_SEED_DB holds no database")
			os.Exit(2)
		}
		if err := os.WriteFile(os.Args[2], db, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "testapp seed:", err)
			os.Exit(1)
		}
		fmt.Printf("testapp: seeded %s\n", os.Args[2])
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "exit" {
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Printf("testapp: exiting with %d\n", code)
		os.Exit(code)
	}
	mode := os.Getenv("APP_MODE")
	version := os.Getenv("APP_VERSION")
	port := os.Getenv("APP_PORT")
	if port == "" {
		port = "8080"
	}
	fmt.Printf("testapp %s starting in mode %q\n", version, mode)
	data := os.Getenv("APP_DATA")
	unhealthy := mode == "unhealthy"
	if data != "" {
		marker := filepath.Join(data, "started-"+version)
		if _, err := os.Stat(marker); err == nil && mode == "once" {
			unhealthy = true
		}
		os.WriteFile(marker, nil, 0o644)
		f, err := os.OpenFile(filepath.Join(data, "history"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, "started %s\n", version)
			f.Close()
		}
	}
	switch mode {
	case "crash":
		fmt.Fprintln(os.Stderr, "testapp: configured to crash: database unreachable")
		os.Exit(3)
	case "slow":
		d, _ := time.ParseDuration(os.Getenv("APP_START_DELAY"))
		time.Sleep(d)
	}
	dieAfter, _ := strconv.Atoi(os.Getenv("APP_DIE_AFTER"))
	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if unhealthy {
			http.Error(w, "db locked", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/history", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Join(data, "history"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if ms, err := strconv.Atoi(r.URL.Query().Get("sleep_ms")); err == nil {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		w.Header().Set("X-App-Version", version)
		fmt.Fprintf(w, "version=%s\n", version)
	})
	handler := http.Handler(mux)
	if dieAfter > 0 {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if served.Add(1) > int64(dieAfter) {
				fmt.Fprintln(os.Stderr, "testapp: dying as configured")
				os.Exit(4)
			}
			mux.ServeHTTP(w, r)
		})
	}
	srv := &http.Server{Addr: ":" + port, Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	stopOn := []os.Signal{syscall.SIGTERM, os.Interrupt}
	if os.Getenv("APP_AS_SHELL") != "" && os.Getpid() == 1 {
		// PID 1 gets no default action for a signal it has no handler for: a shell script
		// started as the container's command never stops on SIGTERM.
		signal.Ignore(syscall.SIGTERM)
		stopOn = []os.Signal{os.Interrupt}
	}
	ctx, stop := signal.NotifyContext(context.Background(), stopOn...)
	defer stop()
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(c)
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
