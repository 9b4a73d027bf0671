package executor_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
)

// An S3 store without a signing_key is one where anyone who can write to the bucket can have
// their data restored into production: plan and apply warn of it, and so does an on-demand
// backup; with a key, or with the local store, nothing is said.
func TestMemUnsignedStoreWarns(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	cfg := s3test.Config(t)
	onS3 := func(key string) *config.Project {
		p := r.config("v1", nil)
		p.Stores["default"] = &config.Store{Name: "default", Kind: config.StoreS3, Bucket: cfg.Bucket, Endpoint: cfg.Endpoint, PathStyle: true, Region: "us-east-1", SigningKey: key}
		return p
	}
	const warning = "backup_store.default (s3://"
	has := func(ws []string) bool {
		for _, w := range ws {
			if strings.HasPrefix(w, warning) && strings.Contains(w, "has no signing_key") && strings.Contains(w, "a restore of one writes their data into your volumes") {
				return true
			}
		}
		return false
	}
	if plan := r.plan(onS3("")); !has(plan.Warnings) {
		t.Errorf("plan warnings without a key: %q", plan.Warnings)
	}
	if plan := r.plan(onS3("0123456789abcdef-signing")); has(plan.Warnings) {
		t.Errorf("plan warnings with a key: %q", plan.Warnings)
	}
	if plan := r.plan(r.config("v1", nil)); has(plan.Warnings) {
		t.Errorf("plan warnings with the local store: %q", plan.Warnings)
	}
	p := onS3("")
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	r.steps()
	if _, err := r.applier(p).Backup(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	var warned []string
	r.mu.Lock()
	for _, e := range r.events {
		if e.Type == executor.EventWarning {
			warned = append(warned, e.Detail)
		}
	}
	r.mu.Unlock()
	if !has(warned) {
		t.Errorf("the backup warned %q", warned)
	}
}
