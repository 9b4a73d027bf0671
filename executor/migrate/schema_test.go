package migrate

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const live = `
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INTEGER, legacy TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), total REAL DEFAULT 0);
CREATE TABLE audit (at TEXT);
CREATE UNIQUE INDEX users_name ON users(name);
CREATE INDEX orders_user ON orders(user_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE TRIGGER audit_orders AFTER INSERT ON orders BEGIN INSERT INTO audit VALUES (datetime('now')); END;
`

func schemaOf(t *testing.T, stmts ...string) *Schema {
	t.Helper()
	file := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", "file:"+file)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	db.Close()
	s, err := Read(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Each kind of migration an app makes, and what the diff says of it.
func TestDiff(t *testing.T) {
	for _, c := range []struct {
		name        string
		migration   string
		want        []string // the diff's lines
		destructive bool
	}{
		{"nothing", "", []string{"no schema change"}, false},
		{"nullable column", "ALTER TABLE users ADD COLUMN email TEXT",
			[]string{"+ column users.email TEXT"}, false},
		{"defaulted NOT NULL column", "ALTER TABLE orders ADD COLUMN status TEXT NOT NULL DEFAULT 'new'",
			[]string{"+ column orders.status TEXT NOT NULL DEFAULT 'new'"}, false},
		{"new table, index, view and trigger", `CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
			CREATE INDEX users_age ON users(age);
			CREATE VIEW adults AS SELECT * FROM users WHERE age >= 18;
			CREATE TRIGGER audit_users AFTER UPDATE ON users BEGIN INSERT INTO audit VALUES (datetime('now')); END;`,
			[]string{
				"+ table notes (id INTEGER PRIMARY KEY, body TEXT)",
				"+ index users_age CREATE INDEX users_age ON users(age)",
				"+ trigger audit_users CREATE TRIGGER audit_users AFTER UPDATE ON users BEGIN INSERT INTO audit VALUES (datetime('now')); END",
				"+ view adults CREATE VIEW adults AS SELECT * FROM users WHERE age >= 18",
			}, false},
		{"dropped column", "ALTER TABLE users DROP COLUMN legacy",
			[]string{"- column users.legacy TEXT (destructive: the running release still reads or writes it)"}, true},
		{"renamed column", "ALTER TABLE users RENAME COLUMN age TO years",
			[]string{
				"- column users.age INTEGER (destructive: the running release still reads or writes it)",
				"+ column users.years INTEGER",
			}, true},
		{"dropped table", "DROP VIEW big_orders; DROP TRIGGER audit_orders; DROP TABLE audit",
			[]string{
				"- table audit (destructive: the running release still reads and writes it)",
				"- trigger audit_orders CREATE TRIGGER audit_orders AFTER INSERT ON orders BEGIN INSERT INTO audit VALUES (datetime('now')); END",
				"- view big_orders CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100",
			}, true},
		{"type changed, NOT NULL added by a rebuild", `CREATE TABLE users2 (id INTEGER PRIMARY KEY, name TEXT NOT NULL, age TEXT, legacy TEXT NOT NULL, nick TEXT NOT NULL);
			INSERT INTO users2 SELECT id, name, age, coalesce(legacy, ''), name FROM users;
			DROP TABLE users; ALTER TABLE users2 RENAME TO users;
			CREATE UNIQUE INDEX users_name ON users(name);`,
			[]string{
				"~ column users.age: type INTEGER -> TEXT (destructive: its type changed)",
				"~ column users.legacy: NULL -> NOT NULL (destructive: it became NOT NULL without a default: the running release's inserts that leave it out fail)",
				"+ column users.nick TEXT NOT NULL (destructive: NOT NULL without a default: the running release's inserts leave it out and fail)",
			}, true},
		{"index changed", "DROP INDEX orders_user; CREATE INDEX orders_user ON orders(user_id, total)",
			[]string{"~ index orders_user: CREATE INDEX orders_user ON orders(user_id, total)"}, false},
		{"default changed", `CREATE TABLE orders2 (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), total REAL DEFAULT 1);
			INSERT INTO orders2 SELECT * FROM orders; DROP VIEW big_orders; DROP TABLE orders; ALTER TABLE orders2 RENAME TO orders;
			CREATE INDEX orders_user ON orders(user_id);
			CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
			CREATE TRIGGER audit_orders AFTER INSERT ON orders BEGIN INSERT INTO audit VALUES (datetime('now')); END;`,
			[]string{"~ column orders.total: default 0 -> 1"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := schemaOf(t, live)
			new := schemaOf(t, live, c.migration)
			changes := Diff(old, new)
			got := Text(changes)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			if Destructive(changes) != c.destructive {
				t.Errorf("destructive = %t, want %t", Destructive(changes), c.destructive)
			}
		})
	}
}

// Spelling a statement differently (white space, IF NOT EXISTS) is not a change.
func TestDiffIgnoresSpelling(t *testing.T) {
	a := schemaOf(t, "CREATE TABLE t (a TEXT); CREATE INDEX t_a ON t(a)")
	b := schemaOf(t, "CREATE TABLE IF NOT EXISTS t (a TEXT);\nCREATE INDEX IF NOT EXISTS t_a\n   ON t(a)")
	if d := Diff(a, b); len(d) != 0 {
		t.Errorf("spelling only: %v", Text(d))
	}
}

// A file that is not a database says so.
func TestReadNotADatabase(t *testing.T) {
	file := filepath.Join(t.TempDir(), "junk")
	if err := writeFile(file, strings.Repeat("not sqlite ", 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(context.Background(), file); err == nil || !strings.Contains(err.Error(), "not a readable SQLite database") {
		t.Errorf("Read of junk: %v", err)
	}
}

func writeFile(name, s string) error { return os.WriteFile(name, []byte(s), 0o644) }
