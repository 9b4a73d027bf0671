// Command testapp is the service that integration tests deploy; package
// executor/engine/testapp has its switches and behaviours, which the in-memory engine's App
// shares.
//
// Run as `testapp exit N` it prints a line and exits with N, for hooks and one-off containers; as
// `testapp seed PATH` it writes the SQLite file in APP_SEED_DB (base64) to PATH. The migrations
// of the tests: `testapp sql PATH SQL` runs SQL on the database at PATH; `testapp sql-fail PATH
// SQL` runs it and then fails, half-way through a migration; `testapp hang` never ends;
// `testapp corrupt PATH` damages the database's second page.
//
// With APP_WRITER_DB=PATH it also commits numbered rows to that SQLite database, one every
// APP_WRITER_EVERY (default 5ms), in APP_WRITER_JOURNAL mode (wal or delete, default wal) with
// APP_WRITER_SYNC as SQLite's synchronous setting (full, its default, or normal), and
// GET /writer says how far it got and the longest gap between two commits (?reset=1 restarts
// that measure).
package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/deployer-dev/deployer/executor/engine/testapp"
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
	if len(os.Args) > 1 && migrate(os.Args[1:]) {
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "exit" {
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Printf("testapp: exiting with %d\n", code)
		os.Exit(code)
	}
	app := testapp.Start(os.Getenv, func(dir string) string { return dir })
	fmt.Printf("testapp %s starting in mode %q\n", app.Version, app.Mode)
	if app.Crashes() {
		fmt.Fprintln(os.Stderr, "testapp: configured to crash: database unreachable")
		os.Exit(3)
	}
	time.Sleep(app.StartDelay)
	handler := app.Handler(func() {
		fmt.Fprintln(os.Stderr, "testapp: dying as configured")
		os.Exit(4)
	})
	if file := os.Getenv("APP_WRITER_DB"); file != "" {
		mux := http.NewServeMux()
		mux.Handle("/", handler)
		mux.Handle("/writer", startWriter(file))
		handler = mux
	}
	port := strconv.Itoa(app.Port)
	srv := &http.Server{Addr: ":" + port, Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	stopOn := []os.Signal{syscall.SIGTERM, os.Interrupt}
	if app.AsShell && os.Getpid() == 1 {
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
