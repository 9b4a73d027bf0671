package backup

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	_ "modernc.org/sqlite" // pure Go: the deployer stays a static binary, the app image needs no sqlite3
)

// QuickCheck runs PRAGMA quick_check on a SQLite file (a copy: it may be written to, as SQLite
// replays a -wal file beside it) and returns nil when the database is ok.
func QuickCheck(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return fmt.Errorf("not a readable SQLite database: %v", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("quick_check failed, the database is damaged: %v", err)
	}
	if len(problems) > 0 {
		if len(problems) > 3 {
			problems = append(problems[:3], fmt.Sprintf("and %d more", len(problems)-3))
		}
		return fmt.Errorf("quick_check failed, the database is damaged: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Empty reports whether a SQLite database holds no data: no tables, or no row in any table.
// An app that creates its schema at startup (the seed's does) leaves tables without rows, and
// that is still a database to seed.
func Empty(ctx context.Context, path string) (bool, error) {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return false, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
	if err != nil {
		return false, fmt.Errorf("not a readable SQLite database: %v", err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return false, err
		}
		tables = append(tables, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("not a readable SQLite database: %v", err)
	}
	for _, t := range tables {
		var one int
		err := db.QueryRowContext(ctx, `SELECT 1 FROM "`+strings.ReplaceAll(t, `"`, `""`)+`" LIMIT 1`).Scan(&one)
		if err == nil {
			return false, nil
		}
		if err != sql.ErrNoRows {
			return false, fmt.Errorf("read table %q: %v", t, err)
		}
	}
	return true, nil
}
