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
	w := &writer{}
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

func (w *writer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(map[string]any{"committed": w.committed, "longest_gap_ms": w.longest.Milliseconds(), "gaps": w.gaps, "error": w.err})
	if r.URL.Query().Get("reset") != "" {
		w.longest, w.gaps = 0, nil
	}
}
