package docker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/registry"

	"github.com/deployer-dev/deployer/executor/engine"
)

// A pull uses the credentials a `registry` block gives for the image's registry, else what
// `docker pull` would use on the machine running the deployer: the docker CLI's config
// ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), its credential helpers and its
// stored logins.

// hubHost is Docker Hub, as references name it and as the docker CLI keys its logins.
const (
	hubHost   = "docker.io"
	hubConfig = "https://index.docker.io/v1/"
)

// RegistryHost is the registry an image reference pulls from ("docker.io" for Docker Hub).
func RegistryHost(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return hubHost
	}
	return reference.Domain(named)
}

// credentials finds what to pull ref with; nil for an anonymous pull. from says where they came
// from, for messages.
func credentials(ref string, blocks map[string]engine.RegistryAuth) (auth *registry.AuthConfig, from string, err error) {
	host := RegistryHost(ref)
	if b, ok := blocks[host]; ok {
		return &registry.AuthConfig{Username: b.Username, Password: b.Password, ServerAddress: host}, fmt.Sprintf("the registry %q block", host), nil
	}
	cfg, path, err := loadCLIConfig()
	if err != nil || cfg == nil {
		return nil, "", err
	}
	keys := []string{host, "https://" + host, "http://" + host}
	if host == hubHost {
		keys = append([]string{hubConfig}, keys...)
	}
	helper := cfg.CredsStore
	for _, k := range keys {
		if h, ok := cfg.CredHelpers[k]; ok {
			helper = h
			break
		}
	}
	if helper != "" {
		server := keys[0]
		a, err := fromHelper(helper, server)
		if err != nil {
			return nil, "", err
		}
		if a != nil {
			return a, fmt.Sprintf("docker-credential-%s (%s)", helper, path), nil
		}
	}
	for _, k := range keys {
		e, ok := cfg.Auths[k]
		if !ok {
			continue
		}
		a := &registry.AuthConfig{ServerAddress: host, IdentityToken: e.IdentityToken, Username: e.Username, Password: e.Password}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, "", fmt.Errorf("%s: the login for %s does not decode", path, k)
			}
			a.Username, a.Password, _ = strings.Cut(string(raw), ":")
		}
		return a, "the login in " + path, nil
	}
	return nil, "", nil
}

// cliConfig is what the deployer reads of the docker CLI's config.
type cliConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
	CredsStore  string            `json:"credsStore"`
	CredHelpers map[string]string `json:"credHelpers"`
}

func loadCLIConfig() (*cliConfig, string, error) {
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, "", nil
		}
		dir = filepath.Join(home, ".docker")
	}
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("the docker CLI's config %s: %w", path, err)
	}
	var c cliConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, path, fmt.Errorf("the docker CLI's config %s is not valid JSON: %v", path, err)
	}
	return &c, path, nil
}

// fromHelper asks a docker credential helper (docker-credential-NAME get) for a server's
// credentials; nil when it has none.
func fromHelper(name, server string) (*registry.AuthConfig, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-credential-"+name, "get")
	cmd.Stdin = strings.NewReader(server)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(string(out) + stderr.String())
		if strings.Contains(msg, "credentials not found") {
			return nil, nil
		}
		return nil, fmt.Errorf("docker-credential-%s get %s: %v %s", name, server, err, msg)
	}
	var c struct{ Username, Secret string }
	if err := json.Unmarshal(out, &c); err != nil {
		return nil, fmt.Errorf("docker-credential-%s get %s: not JSON", name, server)
	}
	a := &registry.AuthConfig{ServerAddress: server}
	if c.Username == "<token>" {
		a.IdentityToken = c.Secret
	} else {
		a.Username, a.Password = c.Username, c.Secret
	}
	return a, nil
}

func encodeAuth(a *registry.AuthConfig) string {
	if a == nil {
		return ""
	}
	b, _ := json.Marshal(a)
	return base64.URLEncoding.EncodeToString(b)
}

// refusedPull turns a registry's refusal into what to configure.
func refusedPull(ref, from string, err error) error {
	msg := strings.ToLower(err.Error())
	refused := false
	for _, s := range []string{"no basic auth credentials", "unauthorized", "authentication required", "denied", "incorrect username or password"} {
		refused = refused || strings.Contains(msg, s)
	}
	host := RegistryHost(ref)
	if !refused {
		return unreachablePull(ref, host, err)
	}
	if from != "" {
		return fmt.Errorf("%w: the registry %s refused the credentials from %s: check them", err, host, from)
	}
	return fmt.Errorf("%w: the registry %s wants credentials: add a registry %q { username = ..., password = var.registry_password } block, or log in on this machine (docker login %s), which the deployer uses as docker pull does", err, host, host, host)
}

// unreachablePull says, of a pull that failed for another reason than credentials, what the
// operator should check: the engine's answer stays, after the reason in plain words.
func unreachablePull(ref, host string, err error) error {
	msg := strings.ToLower(err.Error())
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(msg, w) {
				return true
			}
		}
		return false
	}
	raw := strings.Replace(err.Error(), "Error response from daemon: ", "", 1)
	switch {
	case has("no such host", "connection refused", "i/o timeout", "network is unreachable", "tls handshake timeout", "server misbehaving"):
		return fmt.Errorf("image %s cannot be pulled: the registry %s does not answer the engine (check the image's name, and the engine's network and DNS): %s", ref, host, raw)
	case has("manifest unknown", "not found", "does not exist"):
		return fmt.Errorf("image %s cannot be pulled: the registry %s has no such image (check its name and tag): %s", ref, host, raw)
	}
	if raw == err.Error() {
		return err
	}
	return errors.New(raw)
}
