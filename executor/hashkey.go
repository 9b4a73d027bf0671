package executor

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
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
