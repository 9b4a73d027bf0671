package backup

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
