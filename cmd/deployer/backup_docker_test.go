package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The backup commands through the real binary: an on-demand backup, list (text and JSON),
// verify, and a restore that refuses without confirmation and works with -auto-approve.
func TestBackupCommands(t *testing.T) {
	r := newCLIRig(t)
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	withBackup := strings.Replace(string(cfg), "  deploy {", "  backup {\n    volumes = [\""+r.project+"-data\"]\n    keep    = 2\n  }\n  deploy {", 1)
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(withBackup), 0o644)

	out, code := r.run(nil, "backup", "service.app")
	if code != 1 || !strings.Contains(out, "has no live release to back up") {
		t.Errorf("backup before any deploy: %d\n%s", code, out)
	}
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s", out)
	}
	out, code = r.run(nil, "backup", "service.app")
	id := regexp.MustCompile(`backup (\S+-r1) of release 1 is complete`).FindStringSubmatch(out)
	if code != 0 || id == nil {
		t.Fatalf("backup: %d\n%s", code, out)
	}
	out, code = r.run(nil, "backups", "list", "service.app")
	if code != 0 || !strings.Contains(out, id[1]) || !strings.Contains(out, "on demand") {
		t.Errorf("list: %d\n%s", code, out)
	}
	out, _ = r.run(nil, "backups", "list", "service.app", "-json")
	var listed struct {
		Backups []struct{ ID string } `json:"backups"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Backups) != 1 || listed.Backups[0].ID != id[1] {
		t.Errorf("list -json: %v\n%s", err, out)
	}
	out, code = r.run(nil, "backups", "verify", "service.app", id[1])
	if code != 0 || !strings.Contains(out, "is intact") {
		t.Errorf("verify: %d\n%s", code, out)
	}
	out, code = r.run(nil, "backups", "restore", "service.app", id[1])
	if code != 1 || !strings.Contains(out, "restore this backup needs confirmation") || !strings.Contains(out, "is backed up first, then the live release 1 is stopped") {
		t.Errorf("restore without a terminal: %d\n%s", code, out)
	}
	out, code = r.run(nil, "backups", "restore", "service.app", id[1], "-auto-approve")
	if code != 0 || !strings.Contains(out, "volumes restored from backup "+id[1]) || r.get("/") != "version=v1" {
		t.Errorf("restore: %d\n%s", code, out)
	}
	// keep = 2: the backup taken before the restore plus the one restored; a third prunes the oldest.
	r.run(nil, "backup", "service.app")
	out, _ = r.run(nil, "backups", "list", "service.app", "-json")
	json.Unmarshal([]byte(out), &listed)
	if len(listed.Backups) != 2 {
		t.Errorf("keep 2: %d backups", len(listed.Backups))
	}
	out, code = r.run(nil, "backups", "verify", "service.app", "2001")
	if code != 1 || !strings.Contains(out, `no backup "2001"`) {
		t.Errorf("verify of an unknown backup: %d\n%s", code, out)
	}
}

// What a store holds reaches the terminal escaped: a manifest's text cannot move the cursor,
// retitle the window or hide a line.
func TestBackupTextIsEscaped(t *testing.T) {
	r := newCLIRig(t)
	store := r.addBackup("")
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s", out)
	}
	out, _ := r.run(nil, "backup", "service.app")
	id := regexp.MustCompile(`backup (\S+-r1) of release 1 is complete`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("backup: %s", out)
	}
	p := filepath.Join(store, r.project, "app", id[1], "manifest.json")
	b, _ := os.ReadFile(p)
	b = []byte(strings.Replace(string(b), `"reason": "on demand"`, `"reason": "\u001b]0;pwned\u0007\u001b[2J\r\u202eevil"`, 1))
	os.WriteFile(p, b, 0o600)
	for _, args := range [][]string{{"backups", "list", "service.app"}, {"backups", "restore", "service.app", id[1]}} {
		out, _ := r.run(nil, args...)
		if strings.ContainsAny(out, "\x1b\x07\r\u202e") {
			t.Errorf("%s printed control characters:\n%q", args[1], out)
		}
		if args[1] == "list" && !strings.Contains(out, `\u001b]0;pwned\u0007`) {
			t.Errorf("list does not show the escaped text:\n%s", out)
		}
	}
	// -map is checked before anything else.
	out, code := r.run(nil, "backups", "restore", "service.app", id[1], "-map", "nonsense", "-auto-approve")
	if code != 1 || !strings.Contains(out, "write it as -map BACKUP_VOLUME=CONFIGURED_VOLUME") {
		t.Errorf("bad -map: %d %s", code, out)
	}
}

// With a signing_key, verify is a gate: a backup that is intact but not signed (made before
// the key was set, or forged by someone without it) fails it with exit 1 and says why;
// -allow-unsigned lets it pass, and a signed backup passes.
func TestVerifyRefusesUnsigned(t *testing.T) {
	r := newCLIRig(t)
	r.addBackup("")
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply: %s", out)
	}
	out, _ := r.run(nil, "backup", "service.app")
	unsigned := regexp.MustCompile(`backup (\S+-r1) of release 1 is complete`).FindStringSubmatch(out)
	if unsigned == nil {
		t.Fatalf("backup: %s", out)
	}
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	keyed := "variable \"backup_key\" {\n  type      = string\n  sensitive = true\n}\n" +
		strings.Replace(string(cfg), "backup_store \"local\" {\n", "backup_store \"local\" {\n  signing_key = var.backup_key\n", 1)
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(keyed), 0o644)
	env := []string{"DEPLOYER_VAR_backup_key=0123456789abcdef-signing"}
	out, code := r.run(env, "backups", "verify", "service.app", unsigned[1])
	if code != 1 || !strings.Contains(out, "is intact") || !strings.Contains(out, "NOT signed, and the store has a signing_key: it is not a genuine backup") {
		t.Errorf("verify of an unsigned backup: %d\n%s", code, out)
	}
	if out, code := r.run(env, "backups", "verify", "service.app", unsigned[1], "-allow-unsigned"); code != 0 || !strings.Contains(out, "NOT signed") {
		t.Errorf("verify -allow-unsigned: %d\n%s", code, out)
	}
	out, _ = r.run(env, "backup", "service.app")
	signed := regexp.MustCompile(`backup (\S+-r1) of release 1 is complete`).FindStringSubmatch(out)
	if signed == nil {
		t.Fatalf("backup with the key: %s", out)
	}
	if out, code := r.run(env, "backups", "verify", "service.app", signed[1]); code != 0 || !strings.Contains(out, ", signed.") {
		t.Errorf("verify of a signed backup: %d\n%s", code, out)
	}
}
