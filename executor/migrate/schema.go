// Package migrate reads a SQLite database's schema and says what a migration changed in it:
// tables, columns, indexes, triggers and views, each added, removed or changed, and whether the
// change would break the release still running on the old schema.
package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"

	_ "modernc.org/sqlite" // pure Go, as everywhere in the deployer
)

// Schema is what a database declares: its tables with their columns, and its other objects.
type Schema struct {
	Tables   map[string]*Table
	Indexes  map[string]Object // explicit indexes (not those SQLite makes for UNIQUE or PRIMARY KEY)
	Triggers map[string]Object
	Views    map[string]Object
}

// Table is one table and its columns in declaration order.
type Table struct {
	Name    string
	Columns []Column
}

// Column is what an insert or a query of the old code depends on.
type Column struct {
	Name       string
	Type       string // as declared, e.g. "TEXT", "" when none
	NotNull    bool
	Default    string // the default's SQL text, "" when none
	PrimaryKey bool
}

// Object is an index, trigger or view: its table and its normalised SQL.
type Object struct {
	Name  string
	Table string
	SQL   string
}

// Read opens the SQLite file at path read-only and reads its schema.
func Read(ctx context.Context, path string) (*Schema, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
	if err != nil {
		return nil, fmt.Errorf("not a readable SQLite database: %v", err)
	}
	s := &Schema{Tables: map[string]*Table{}, Indexes: map[string]Object{}, Triggers: map[string]Object{}, Views: map[string]Object{}}
	var tables []string
	for rows.Next() {
		var typ, name, table, text string
		if err := rows.Scan(&typ, &name, &table, &text); err != nil {
			rows.Close()
			return nil, err
		}
		o := Object{Name: name, Table: table, SQL: normalise(text)}
		switch typ {
		case "table":
			tables = append(tables, name)
		case "index":
			if text != "" { // "" is an index SQLite made for a constraint: part of its table
				s.Indexes[name] = o
			}
		case "trigger":
			s.Triggers[name] = o
		case "view":
			s.Views[name] = o
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the schema: %v", err)
	}
	for _, name := range tables {
		t := &Table{Name: name}
		cols, err := db.QueryContext(ctx, "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?)", name)
		if err != nil {
			return nil, fmt.Errorf("read the columns of %s: %v", name, err)
		}
		for cols.Next() {
			var c Column
			var def sql.NullString
			var pk int
			if err := cols.Scan(&c.Name, &c.Type, &c.NotNull, &def, &pk); err != nil {
				cols.Close()
				return nil, err
			}
			c.Default, c.PrimaryKey = def.String, pk > 0
			t.Columns = append(t.Columns, c)
		}
		cols.Close()
		if err := cols.Err(); err != nil {
			return nil, fmt.Errorf("read the columns of %s: %v", name, err)
		}
		s.Tables[name] = t
	}
	return s, nil
}

// normalise makes two spellings of the same statement compare equal: runs of white space are
// one space, and "IF NOT EXISTS" (which SQLite keeps as written) is dropped.
func normalise(sqlText string) string {
	s := strings.Join(strings.Fields(sqlText), " ")
	for _, f := range []string{" IF NOT EXISTS", " if not exists"} {
		s = strings.Replace(s, f, "", 1)
	}
	return s
}

// Op is what happened to an object.
type Op string

const (
	Added   Op = "added"
	Removed Op = "removed"
	Changed Op = "changed"
)

// Change is one difference between the live schema and the migrated one.
type Change struct {
	Kind        string `json:"kind"` // table, column, index, trigger, view
	Name        string `json:"name"` // "orders", "orders.note"
	Op          Op     `json:"op"`
	Detail      string `json:"detail,omitempty"` // "TEXT NOT NULL DEFAULT 'x'", "type INTEGER -> TEXT"
	Destructive bool   `json:"destructive"`
	Why         string `json:"why,omitempty"` // what it breaks, when destructive
}

// Diff lists what changed from old (the live database) to new (the migrated copy), tables and
// their columns first, then indexes, triggers and views, each in name order. A change is
// destructive when the release still running on the old schema could break on the new one: a
// table or column removed (or renamed: it shows as removed and added), a column's type changed,
// a column that became NOT NULL without a default (old inserts that leave it out fail), or a
// column's primary key changed.
func Diff(old, new *Schema) []Change {
	var out []Change
	for _, name := range keys(old.Tables, new.Tables) {
		ot, nt := old.Tables[name], new.Tables[name]
		switch {
		case nt == nil:
			out = append(out, Change{Kind: "table", Name: name, Op: Removed, Destructive: true, Why: "the running release still reads and writes it"})
		case ot == nil:
			out = append(out, Change{Kind: "table", Name: name, Op: Added, Detail: columnList(nt)})
		default:
			out = append(out, diffColumns(ot, nt)...)
		}
	}
	for _, kind := range []struct {
		name     string
		old, new map[string]Object
	}{{"index", old.Indexes, new.Indexes}, {"trigger", old.Triggers, new.Triggers}, {"view", old.Views, new.Views}} {
		for _, name := range keys(kind.old, kind.new) {
			o, inOld := kind.old[name]
			n, inNew := kind.new[name]
			switch {
			case !inNew:
				out = append(out, Change{Kind: kind.name, Name: name, Op: Removed, Detail: o.SQL})
			case !inOld:
				out = append(out, Change{Kind: kind.name, Name: name, Op: Added, Detail: n.SQL})
			case o.SQL != n.SQL:
				out = append(out, Change{Kind: kind.name, Name: name, Op: Changed, Detail: n.SQL})
			}
		}
	}
	return out
}

func diffColumns(ot, nt *Table) []Change {
	var out []Change
	oldCols, newCols := map[string]Column{}, map[string]Column{}
	for _, c := range ot.Columns {
		oldCols[c.Name] = c
	}
	for _, c := range nt.Columns {
		newCols[c.Name] = c
	}
	for _, c := range ot.Columns {
		if _, ok := newCols[c.Name]; !ok {
			out = append(out, Change{Kind: "column", Name: ot.Name + "." + c.Name, Op: Removed, Detail: c.describe(), Destructive: true, Why: "the running release still reads or writes it"})
		}
	}
	for _, n := range nt.Columns {
		o, ok := oldCols[n.Name]
		name := nt.Name + "." + n.Name
		if !ok {
			ch := Change{Kind: "column", Name: name, Op: Added, Detail: n.describe()}
			if n.NotNull && n.Default == "" {
				ch.Destructive, ch.Why = true, "NOT NULL without a default: the running release's inserts leave it out and fail"
			}
			out = append(out, ch)
			continue
		}
		var what, why []string
		if !strings.EqualFold(o.Type, n.Type) {
			what = append(what, fmt.Sprintf("type %s -> %s", orNone(o.Type), orNone(n.Type)))
			why = append(why, "its type changed")
		}
		if o.NotNull != n.NotNull {
			what = append(what, fmt.Sprintf("%s -> %s", nullability(o.NotNull), nullability(n.NotNull)))
			if n.NotNull && n.Default == "" {
				why = append(why, "it became NOT NULL without a default: the running release's inserts that leave it out fail")
			}
		}
		if o.Default != n.Default {
			what = append(what, fmt.Sprintf("default %s -> %s", orNone(o.Default), orNone(n.Default)))
		}
		if o.PrimaryKey != n.PrimaryKey {
			what = append(what, fmt.Sprintf("primary key %t -> %t", o.PrimaryKey, n.PrimaryKey))
			why = append(why, "its primary key changed")
		}
		if len(what) > 0 {
			out = append(out, Change{Kind: "column", Name: name, Op: Changed, Detail: strings.Join(what, ", "), Destructive: len(why) > 0, Why: strings.Join(why, "; ")})
		}
	}
	return out
}

// Destructive reports whether any change is.
func Destructive(changes []Change) bool {
	for _, c := range changes {
		if c.Destructive {
			return true
		}
	}
	return false
}

// Text renders changes one per line: "+ column orders.note TEXT", "- table legacy
// (destructive: ...)", "~ column users.age: type INTEGER -> TEXT (destructive: ...)".
func Text(changes []Change) []string {
	if len(changes) == 0 {
		return []string{"no schema change"}
	}
	var out []string
	for _, c := range changes {
		sign := map[Op]string{Added: "+", Removed: "-", Changed: "~"}[c.Op]
		line := sign + " " + c.Kind + " " + c.Name
		if c.Detail != "" {
			sep := " "
			if c.Op == Changed {
				sep = ": "
			}
			line += sep + c.Detail
		}
		if c.Destructive {
			line += " (destructive: " + c.Why + ")"
		}
		out = append(out, line)
	}
	return out
}

func (c Column) describe() string {
	parts := []string{orNone(c.Type)}
	if c.NotNull {
		parts = append(parts, "NOT NULL")
	}
	if c.Default != "" {
		parts = append(parts, "DEFAULT "+c.Default)
	}
	if c.PrimaryKey {
		parts = append(parts, "PRIMARY KEY")
	}
	return strings.Join(parts, " ")
}

func columnList(t *Table) string {
	var cols []string
	for _, c := range t.Columns {
		cols = append(cols, c.Name+" "+c.describe())
	}
	return "(" + strings.Join(cols, ", ") + ")"
}

func nullability(notNull bool) string {
	if notNull {
		return "NOT NULL"
	}
	return "NULL"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// keys lists the names in either map, sorted.
func keys[V any](a, b map[string]V) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range []map[string]V{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}
