package main

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"os"
	"sync"
	"time"

	_ "modernc.org/sqlite"
)

// writer commits numbered rows at a steady rate, as an app taking orders would, and measures
// the longest time between two commits: a paused container or a blocked writer shows there.
type writer struct {
	file      string
	mu        sync.Mutex
	committed int64
	last      time.Time
	longest   time.Duration
	gaps      []gap // the last 100 gaps over 25 ms: when a stall happened, beside what else ran
	err       string
}

type gap struct {
	End time.Time `json:"end"`
	MS  int64     `json:"ms"`
}

func startWriter(file string) http.Handler {
	w := &writer{file: file}
	journal := os.Getenv("APP_WRITER_JOURNAL")
	if journal == "" {
		journal = "wal"
	}
	every, err := time.ParseDuration(os.Getenv("APP_WRITER_EVERY"))
	if err != nil {
		every = 5 * time.Millisecond
	}
	sync := os.Getenv("APP_WRITER_SYNC") // SQLite's synchronous: full (its default) or normal
	if sync == "" {
		sync = "full"
	}
	go w.run(file, journal, sync, every)
	return w
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	w.err = err.Error()
	w.mu.Unlock()
}

func (w *writer) run(file, journal, sync string, every time.Duration) {
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(60000)&_pragma=journal_mode("+journal+")&_pragma=synchronous("+sync+")")
	if err != nil {
		w.fail(err)
		return
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY, at TEXT)"); err != nil {
		w.fail(err)
		return
	}
	w.mu.Lock()
	w.last = time.Now()
	w.mu.Unlock()
	for {
		// Numbered by SQLite: two releases writing at once (live and candidate) share the count.
		res, err := db.Exec("INSERT INTO rows (at) VALUES (?)", time.Now().UTC().Format(time.RFC3339Nano))
		if err != nil {
			w.fail(err)
			return
		}
		n, _ := res.LastInsertId()
		now := time.Now()
		w.mu.Lock()
		w.committed = n
		w.longest = max(w.longest, now.Sub(w.last))
		if d := now.Sub(w.last); d > 25*time.Millisecond {
			w.gaps = append(w.gaps, gap{now, d.Milliseconds()})
			if len(w.gaps) > 100 {
				w.gaps = w.gaps[1:]
			}
		}
		w.last = now
		w.mu.Unlock()
		time.Sleep(every)
	}
}

// look reads what a test compares before and after a migration: the rows table's columns, its
// row count and highest row number, and the database's indexes (?schema=1).
func (w *writer) look() (cols []string, count, maxN int64, indexes []string) {
	db, err := sql.Open("sqlite", "file:"+w.file+"?_pragma=busy_timeout(60000)")
	if err != nil {
		return nil, -1, -1, nil
	}
	defer db.Close()
	names := func(query string) []string {
		var out []string
		if rows, err := db.Query(query); err == nil {
			for rows.Next() {
				var c string
				rows.Scan(&c)
				out = append(out, c)
			}
			rows.Close()
		}
		return out
	}
	cols = names("SELECT name FROM pragma_table_info('rows')")
	indexes = names("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
	// In one statement: a row lost or added shows as a count other than the highest number.
	db.QueryRow("SELECT count(*), coalesce(max(n), 0) FROM rows").Scan(&count, &maxN)
	return cols, count, maxN, indexes
}

func (w *writer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	out := map[string]any{}
	if r.URL.Query().Get("schema") != "" {
		out["columns"], out["count"], out["max"], out["indexes"] = w.look()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	rw.Header().Set("Content-Type", "application/json")
	out["committed"], out["longest_gap_ms"], out["gaps"], out["error"] = w.committed, w.longest.Milliseconds(), w.gaps, w.err
	json.NewEncoder(rw).Encode(out)
	if r.URL.Query().Get("reset") != "" {
		w.longest, w.gaps = 0, nil
	}
}
