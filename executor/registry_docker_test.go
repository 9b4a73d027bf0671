package executor_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
)

// startRegistry runs a real registry (distribution's, which .ci/run installs) on 127.0.0.1 that
// wants a user and password, and returns its host.
func startRegistry(t *testing.T, user, pass string) string {
	bin, err := exec.LookPath("registry")
	if err != nil {
		if gopath, _ := exec.Command("go", "env", "GOPATH").Output(); len(gopath) > 0 {
			if p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "registry"); fileExists(p) {
				bin, err = p, nil
			}
		}
	}
	htpasswd, herr := exec.LookPath("htpasswd")
	if err != nil || herr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI installs the registry and htpasswd (.ci/run): %v %v", err, herr)
		}
		t.Skip("no registry or htpasswd")
	}
	dir := t.TempDir()
	out, err := exec.Command(htpasswd, "-Bbn", user, pass).Output()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600)
	host := fmt.Sprintf("127.0.0.1:%d", dockertest.FreePort(t))
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\nauth:\n  htpasswd:\n    realm: deployer-test\n    path: %s\n",
		filepath.Join(dir, "data"), host, filepath.Join(dir, "htpasswd"))
	os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600)
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return host
			}
		}
		if i == 100 {
			t.Fatalf("the registry on %s does not answer: %v", host, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func authHeader(host, user, pass string) string {
	b, _ := json.Marshal(registry.AuthConfig{Username: user, Password: pass, ServerAddress: host})
	return base64.URLEncoding.EncodeToString(b)
}

// Pulls from a private registry use the credentials of a registry block, else what `docker pull`
// would use on this machine (the docker CLI's logins and credential helpers); a refused pull
// says which registry, and what to configure.
func TestPrivateRegistry(t *testing.T) {
	host := startRegistry(t, "ci", "s3cret-pass")
	r := newRig(t)
	ctx := context.Background()
	ref := host + "/" + r.project + "/app:1"
	cli := r.eng.Client()
	if err := cli.ImageTag(ctx, r.image, ref); err != nil {
		t.Fatal(err)
	}
	rc, err := cli.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: authHeader(host, "ci", "s3cret-pass")})
	if err != nil {
		t.Fatal(err)
	}
	pushed, _ := io.ReadAll(rc)
	rc.Close()
	if strings.Contains(string(pushed), `"error"`) {
		t.Fatalf("push: %s", pushed)
	}
	untag := func() {
		if _, err := cli.ImageRemove(ctx, ref, image.RemoveOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	untag()
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no login on this machine
	private := func(s *config.Service) { s.Image = ref }
	withBlock := func(p *config.Project, user, pass string) *config.Project {
		p.Registries = map[string]*config.Registry{host: {Host: host, Username: user, Password: pass}}
		return p
	}

	so := r.apply(r.config("v1", private))
	want := fmt.Sprintf(`the registry %s wants credentials: add a registry %q { username = ..., password = var.registry_password } block, or log in on this machine (docker login %s)`, host, host, host)
	if !strings.Contains(so.Error, want) || r.state() != "" {
		t.Errorf("no credentials: %q, containers %q", so.Error, r.state())
	}
	so = r.apply(withBlock(r.config("v1", private), "ci", "wrong"))
	if !strings.Contains(so.Error, fmt.Sprintf("the registry %s refused the credentials from the registry %q block", host, host)) {
		t.Errorf("wrong password: %q", so.Error)
	}
	if so := r.apply(withBlock(r.config("v1", private), "ci", "s3cret-pass")); so.Error != "" || r.get("/") != "version=v1" {
		t.Fatalf("with a registry block: %+v", so)
	}

	// The docker CLI's stored login.
	untag()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, base64.StdEncoding.EncodeToString([]byte("ci:s3cret-pass")))), 0o600)
	t.Setenv("DOCKER_CONFIG", dir)
	if so := r.apply(r.config("v2", private)); so.Error != "" || r.get("/") != "version=v2" {
		t.Fatalf("with docker login's credentials: %+v", so)
	}

	// A credential helper, as docker-credential-pass or -ecr-login.
	untag()
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "docker-credential-deployertest"), []byte("#!/bin/sh\nread server\necho '{\"ServerURL\": \"'$server'\", \"Username\": \"ci\", \"Secret\": \"s3cret-pass\"}'\n"), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"credHelpers": {%q: "deployertest"}}`, host)), 0o600)
	if so := r.apply(r.config("v3", private)); so.Error != "" || r.get("/") != "version=v3" {
		t.Fatalf("with a credential helper: %+v", so)
	}
}
