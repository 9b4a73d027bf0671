package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A build context is a pull request's checkout: a name in it that holds a new line or an escape
// sequence is quoted in the errors plan shows, so that it cannot start a line of its own (a CI
// log's workflow command) or drive a terminal.
func TestContextErrorsQuoteNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctx\n::error::injected\x1b[31m")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("this file system refuses the name: %v", err)
	}
	for _, dockerfile := range []string{"Dockerfile", "sub\n::warning::x/Dockerfile"} {
		_, err := ContextHash(dir, dockerfile)
		if err == nil || strings.ContainsAny(err.Error(), "\n\x1b") {
			t.Errorf("dockerfile %q: %q", dockerfile, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ".dockerignore"), []byte("[\n"), 0o644)
	if _, err := ContextHash(dir, "Dockerfile"); err == nil || strings.ContainsAny(err.Error(), "\n\x1b") {
		t.Errorf("a bad .dockerignore: %q", err)
	}
}
