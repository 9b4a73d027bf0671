package backup

import (
	"encoding/json"
	"time"
)

// SetLimits lowers the listing bounds for a test; the returned func puts them back.
func SetLimits(listObjects int, manifestsBytes int64) (restore func()) {
	o, m := maxListObjects, maxManifestsBytes
	maxListObjects, maxManifestsBytes = listObjects, manifestsBytes
	return func() { maxListObjects, maxManifestsBytes = o, m }
}

// VerifyArchive is verifyArchive, for tests that look at what it leaves in dir.
var VerifyArchive = verifyArchive

// ScratchName is the name verify gives the i-th database of a volume.
var ScratchName = scratchName

// SetMaxArchiveEntries lowers the entries an archive may make, for a test.
func SetMaxArchiveEntries(n int64) (restore func()) {
	o := maxArchiveEntries
	maxArchiveEntries = n
	return func() { maxArchiveEntries = o }
}

// SetStoreIdle shortens how long a request to an S3 store may go silent, for a test.
func SetStoreIdle(d time.Duration) (restore func()) {
	o := storeIdle
	storeIdle = d
	return func() { storeIdle = o }
}

// SetPruneDeadline shortens the prune's deadline after a backup, for a test.
func SetPruneDeadline(d time.Duration) (restore func()) {
	o := pruneDeadline
	pruneDeadline = d
	return func() { pruneDeadline = o }
}

// SignLegacy signs a manifest as a deployer did before signatures bound the store.
func SignLegacy(raw map[string]any, key []byte) string {
	b, _ := json.Marshal(raw)
	var m Manifest
	json.Unmarshal(b, &m)
	m.Store = ""
	return m.sign(key)
}
