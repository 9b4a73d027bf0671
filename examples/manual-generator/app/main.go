// Command server stands in for the seed's Flask app so that its deployment can be exercised
// without Python: run as startup.sh it serves /health and /manuals on $PORT; as seed.sh it writes
// a first database file; as migrate.sh it records that migrations ran. Its database is a plain
// file here; the sqlite checks of the deployer need a real SQLite file, which the seed creates.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "seed.sh":
		seed()
	case "migrate.sh":
		fmt.Println("migrations: nothing to do")
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

func seed() {
	if st, err := os.Stat(dbPath()); err == nil && st.Size() > 0 {
		fmt.Println("seed: database already has data")
		return
	}
	if err := os.WriteFile(dbPath(), []byte("seeded\n"), 0o644); err != nil {
		log.Fatalf("seed: %v", err)
	}
	fmt.Println("seed: database created")
}

func serve() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/manuals", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"count": 0, "manuals": []}`)
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("manual-generator stand-in listening on :%s", port)
	log.Fatal(srv.ListenAndServe())
}
