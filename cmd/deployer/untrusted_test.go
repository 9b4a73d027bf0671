package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// An address computed from a secret (here, the test's own listener, so that a connection would
// be seen) is refused by validate and plan, naming the attribute, and never contacted: the
// secret would leave in the connection, or in a DNS query for a name built from it. The same
// address written plainly is contacted by plan, which shows the listener would see it.
func TestSensitiveAddressNeverContacted(t *testing.T) {
	port, accepted := countingListener(t)
	const secret = "tok-QzWxRvPsYuMn"
	t.Setenv("DEPLOYER_VAR_token", secret)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "AKIAqRzXwVtYuPsN")
	// "127.0.0.1", computed from the secret: the value is the listener's, the mark the secret's.
	loopback := `substr("127.0.0.1${var.token}", 0, 9)`
	cases := []struct{ name, body, attr string }{
		{"docker host", fmt.Sprintf(`docker { host = "tcp://${%s}:%d" }`, loopback, port), "docker.host"},
		{"docker host from env", fmt.Sprintf(`docker { host = "tcp://${substr("127.0.0.1${env("AWS_SECRET_ACCESS_KEY")}", 0, 9)}:%d" }`, port), "docker.host"},
		{"ssh engine", fmt.Sprintf(`docker { host = "ssh://deploy@${%s}:%d" }`, loopback, port), "docker.host"},
		{"engine block", fmt.Sprintf(`engine "e" { host = "tcp://${%s}:%d" }`, loopback, port), "engine.e.host"},
		{"store endpoint", fmt.Sprintf(`backup_store "s3" {
  bucket   = "bucket"
  endpoint = "http://${%s}:%d"
}`, loopback, port), "backup_store.s3.endpoint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			src := "project = \"x\"\nvariable \"token\" {\n  type      = string\n  sensitive = true\n}\n" + c.body + "\nservice \"web\" { image = \"web:1\" }\n"
			os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
			for _, cmd := range []string{"validate", "plan"} {
				var out, errOut bytes.Buffer
				if code := run([]string{cmd, dir}, nil, &out, &errOut); code != 1 {
					t.Errorf("%s exits %d:\n%s%s", cmd, code, out.String(), errOut.String())
				}
				all := out.String() + errOut.String()
				if !strings.Contains(all, "Sensitive value in an address") || !strings.Contains(all, c.attr+" is computed from a sensitive value") {
					t.Errorf("%s does not refuse %s:\n%s", cmd, c.attr, all)
				}
				if strings.Contains(all, "QzWx") || strings.Contains(all, "AKIA") {
					t.Errorf("%s shows the secret:\n%s", cmd, all)
				}
			}
			if n := accepted.Load(); n != 0 {
				t.Fatalf("the listener was contacted %d times", n)
			}
		})
	}
	// The control: written plainly, the address is contacted by plan.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(fmt.Sprintf("project = \"x\"\ndocker { host = \"tcp://127.0.0.1:%d\" }\nservice \"web\" { image = \"web:1\" }\n", port)), 0o644)
	var out bytes.Buffer
	run([]string{"plan", dir}, nil, &out, &out)
	if accepted.Load() == 0 {
		t.Errorf("plan did not contact the plain address, so the test sees nothing:\n%s", out.String())
	}
}

// countingListener listens on a free port of 127.0.0.1 until the test ends, counting the
// connections it accepts: whatever would contact it is seen.
func countingListener(t *testing.T) (int, *atomic.Int32) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}
