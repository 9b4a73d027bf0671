package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/executor/migrate"
)

// The helper's sqlite-schema reads what the migration dry-run diffs: each file's quick_check
// and schema, one JSON line each; a damaged file says so instead of a schema.
func TestInternalSQLiteSchema(t *testing.T) {
	dir := t.TempDir()
	live, migrated, junk := filepath.Join(dir, "live.db"), filepath.Join(dir, "migrated.db"), filepath.Join(dir, "junk.db")
	for file, stmts := range map[string]string{
		live:     "CREATE TABLE manuals (id INTEGER PRIMARY KEY, title TEXT NOT NULL)",
		migrated: "CREATE TABLE manuals (id INTEGER PRIMARY KEY, title TEXT NOT NULL, author TEXT); CREATE INDEX manuals_title ON manuals(title)",
	} {
		db, err := sql.Open("sqlite", "file:"+file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(stmts); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	os.WriteFile(junk, []byte(strings.Repeat("not a database ", 500)), 0o644)
	var out bytes.Buffer
	root, _ := newRoot(nil, &out, io.Discard)
	root.SetArgs([]string{"internal", "sqlite-schema", live, migrated, junk})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var reps []schemaReport
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r schemaReport
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		reps = append(reps, r)
	}
	if len(reps) != 3 || reps[0].QuickCheck != "ok" || reps[1].QuickCheck != "ok" || reps[0].Schema == nil || reps[1].Schema == nil {
		t.Fatalf("reports: %+v", reps)
	}
	diff := strings.Join(migrate.Text(migrate.Diff(reps[0].Schema, reps[1].Schema)), "\n")
	if diff != "+ column manuals.author TEXT\n+ index manuals_title CREATE INDEX manuals_title ON manuals(title)" {
		t.Errorf("diff of the two reports:\n%s", diff)
	}
	if reps[2].QuickCheck == "ok" || reps[2].Schema != nil {
		t.Errorf("junk: %+v", reps[2])
	}
}
