package plan

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// Sensitive values are recorded where they must be compared but never shown (the spec on a
// release's labels, a saved plan) as a keyed hash: HMAC-SHA256 under a random key the project
// keeps on its engine (Engine.ProjectKey), never in a plan file. A saved plan passed around as
// a CI artifact, or a label read by someone without the engine, cannot be checked against a
// guess offline.

// Hasher hashes sensitive values with a project's key.
type Hasher struct{ key []byte }

// NewHasher returns a hasher for a project's key.
func NewHasher(key []byte) *Hasher { return &Hasher{key: key} }

const (
	sensitivePrefix = `"(sensitive) `
	keyedMark       = "hmac:"
	legacyMark      = "sha256:" // unkeyed, as deployers before 2026-11-28 recorded them
)

// Sensitive is the recorded form of a sensitive value: a JSON string, like the attribute values
// it stands for.
func (h *Hasher) Sensitive(v string) string {
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(v))
	return sensitivePrefix + keyedMark + hex.EncodeToString(mac.Sum(nil)) + `"`
}

// Matches reports whether a recorded form (this version's keyed one, or an earlier version's
// unkeyed one) stands for the value v, so that a release deployed before the key existed is
// not shown as changed.
func (h *Hasher) Matches(recorded, v string) bool {
	if strings.HasPrefix(recorded, sensitivePrefix+legacyMark) {
		sum := sha256.Sum256([]byte(v))
		return recorded == sensitivePrefix+legacyMark+hex.EncodeToString(sum[:])+`"`
	}
	return hmac.Equal([]byte(recorded), []byte(h.Sensitive(v)))
}

// isSensitiveRecord reports whether a recorded attribute value is a hash of a sensitive value.
func isSensitiveRecord(v string) bool { return strings.HasPrefix(v, sensitivePrefix) }

// planHasher is what a plan hashes sensitive values with: the project's key, made first when
// makeKey (a saved plan needs it). A plan makes nothing on the engine, so without makeKey a
// project that has no key yet gets a key of this plan's own, and keyless is true. That compares
// right: a project has a key once anything was applied (apply makes it before its first
// release), so the engine then holds no keyed record to compare with, only the unkeyed ones of
// releases from before keys, which Matches compares without a key. Its hashes cannot be
// compared with another plan's, which is why a saved plan makes the key.
func planHasher(ctx context.Context, eng engine.Engine, project string, makeKey bool) (h *Hasher, keyless bool, err error) {
	var key []byte
	if makeKey {
		key, err = eng.ProjectKey(ctx, project)
	} else {
		key, err = eng.ReadProjectKey(ctx, project)
	}
	if err != nil {
		return nil, false, err
	}
	if key != nil {
		if err := CheckProjectKey(project, key); err != nil {
			return nil, false, err
		}
	}
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, false, err
		}
		keyless = true
	}
	return NewHasher(key), keyless, nil
}

// BuildHash is what an image built for a service is known by (the deployer.context-hash label
// of the image and its releases): the content of its build context and every other input of the
// build, the Dockerfile, the build args (a sensitive one by its keyed hash) and the image name it
// is tagged with. The live image is reused only when a build would get all of them the same: a
// changed arg is built with, and a new tag (a CI's commit, say) is made.
func BuildHash(p *config.Project, s *config.Service, content string, hs *Hasher) string {
	if hs == nil {
		hs = NewHasher(nil)
	}
	h := sha256.New()
	fmt.Fprintf(h, "context %s\ndockerfile %q\nimage %q\n", content, s.Build.Dockerfile, s.Image)
	for _, k := range SortedKeys(s.Build.Args) {
		v := s.Build.Args[k]
		if p.IsSensitive(s.Name, config.BuildArgAttr(k)) {
			v = hs.Sensitive(v)
		}
		fmt.Fprintf(h, "arg %q %q\n", k, v)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
