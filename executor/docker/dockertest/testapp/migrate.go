package main

import (
	"database/sql"
	"fmt"
	"os"
	"time"
)

// migrate runs the migrations the tests deploy with; false when args name none.
func migrate(args []string) bool {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "testapp migrate:", err)
		os.Exit(1)
	}
	switch {
	case args[0] == "hang":
		fmt.Println("testapp: migrating forever")
		for {
			time.Sleep(time.Hour)
		}
	case (args[0] == "sql" || args[0] == "sql-fail") && len(args) == 3:
		db, err := sql.Open("sqlite", "file:"+args[1]+"?_pragma=busy_timeout(60000)")
		if err != nil {
			fail(err)
		}
		defer db.Close()
		if _, err := db.Exec(args[2]); err != nil {
			fail(err)
		}
		fmt.Printf("testapp: ran %q on %s\n", args[2], args[1])
		if args[0] == "sql-fail" {
			db.Close()
			fail(fmt.Errorf("failing half-way, as configured"))
		}
		return true
	case args[0] == "corrupt" && len(args) == 2:
		f, err := os.OpenFile(args[1], os.O_RDWR, 0)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		var hdr [100]byte
		if _, err := f.ReadAt(hdr[:], 0); err != nil {
			fail(err)
		}
		size := int64(hdr[16])<<8 | int64(hdr[17])
		if size == 1 {
			size = 65536
		}
		junk := make([]byte, size)
		for i := range junk {
			junk[i] = 0xA5
		}
		if _, err := f.WriteAt(junk, size); err != nil { // page 2: a table's root
			fail(err)
		}
		fmt.Printf("testapp: corrupted %s\n", args[1])
		return true
	}
	return false
}
