package plan

import "fmt"

// minKeyBytes is the shortest project key accepted, and minKeyDistinct the fewest distinct bytes
// in it: the deployer makes 32 random bytes (about 30 distinct), so fewer is not a key it made.
const (
	minKeyBytes    = 16
	minKeyDistinct = 8
)

// CheckProjectKey refuses a project key read from the engine that is no random key: too short,
// or nearly all one byte (32 zero bytes, as a hostile or broken engine may hand over). Hashes
// under such a key could be checked against guesses offline, as if there were no key.
func CheckProjectKey(project string, key []byte) error {
	seen := map[byte]bool{}
	for _, b := range key {
		seen[b] = true
	}
	if len(key) < minKeyBytes || len(seen) < minKeyDistinct {
		return fmt.Errorf("the key of project %q read from the engine (label deployer.key of the volume %s-deployer-key) is not a random key (%d bytes, %d distinct): hashes of sensitive values under it could be checked against guesses. Remove that volume (docker volume rm %s-deployer-key): the next apply makes a new key, and shows the releases' sensitive values as changed once",
			project, project, len(key), len(seen), project)
	}
	return nil
}
