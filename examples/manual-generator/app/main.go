// Command server stands in for the seed's Flask app so that its deployment can be exercised
// without Python. One static binary answers to the seed's three script names:
//
//	startup.sh  serves /health and /manuals (a JSON count of manuals) on $PORT
//	seed.sh     creates the SQLite database with its schema and a first manual
//	migrate.sh  applies the schema (idempotent), as the seed's migrations would
//
// The database is a real SQLite file (pure Go, so the image stays FROM scratch), which is what
// the deployer's quick_check and backups look at.
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"
)

const schema = `CREATE TABLE IF NOT EXISTS manuals (
	id INTEGER PRIMARY KEY,
	title TEXT NOT NULL,
	created_at TEXT NOT NULL
)`

func main() {
	switch filepath.Base(os.Args[0]) {
	case "seed.sh":
		seed()
	case "migrate.sh":
		migrate()
	default:
		serve()
	}
}

func dbPath() string {
	if p := os.Getenv("DATABASE_PATH"); p != "" {
		return p
	}
	return "/app/instance/manual_generator.db"
}

func open(mode string) *sql.DB {
	db, err := sql.Open("sqlite", "file:"+dbPath()+"?mode="+mode+"&_pragma=busy_timeout(5000)")
	if err != nil {
		log.Fatal(err)
	}
	return db
}

func seed() {
	db := open("rwc")
	defer db.Close()
	if _, err := db.Exec(schema); err != nil {
		log.Fatalf("seed: %v", err)
	}
	var n int
	db.QueryRow("SELECT count(*) FROM manuals").Scan(&n)
	if n == 0 {
		if _, err := db.Exec("INSERT INTO manuals (title, created_at) VALUES (?, ?)", "Getting started", time.Now().UTC().Format(time.RFC3339)); err != nil {
			log.Fatalf("seed: %v", err)
		}
	}
	fmt.Println("seed: database ready")
}

func migrate() {
	if _, err := os.Stat(dbPath()); err != nil {
		fmt.Println("migrations: no database yet; the seed creates it")
		return
	}
	db := open("rw")
	defer db.Close()
	if _, err := db.Exec(schema); err != nil {
		log.Fatalf("migrate: %v", err)
	}
	fmt.Println("migrations: schema up to date")
}

func serve() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/manuals", func(w http.ResponseWriter, r *http.Request) {
		n := 0
		if _, err := os.Stat(dbPath()); err == nil { // read only: never create the database here
			db := open("ro")
			db.QueryRow("SELECT count(*) FROM manuals").Scan(&n)
			db.Close()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int{"count": n})
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("manual-generator stand-in listening on :%s", port)
	log.Fatal(srv.ListenAndServe())
}
