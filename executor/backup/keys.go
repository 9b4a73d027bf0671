package backup

import (
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
)

// Keys are what a deployment holds that the store does not: the age recipients new archives
// are encrypted to, the identities that decrypt them, and the key that signs manifests. The
// store then holds no plaintext, and cannot forge a manifest without being noticed.
type Keys struct {
	Recipients []age.Recipient
	Identities []age.Identity
	SigningKey []byte
	// IdentitySource says where the identities would come from, for the error that asks for them.
	IdentitySource string
}

func (k *Keys) signingKey() []byte {
	if k == nil || len(k.SigningKey) == 0 {
		return nil
	}
	return k.SigningKey
}

func (k *Keys) encrypts() bool { return k != nil && len(k.Recipients) > 0 }

// ParseRecipients reads age recipients ("age1...") as the configuration lists them.
func ParseRecipients(list []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for i, s := range list {
		r, err := age.ParseRecipients(strings.NewReader(strings.TrimSpace(s)))
		if err != nil || len(r) != 1 {
			return nil, fmt.Errorf("age_recipients[%d] %q is not an age recipient (age1...): %v", i, s, err)
		}
		out = append(out, r...)
	}
	return out, nil
}

// LoadIdentities reads an age identity file (as age-keygen writes it).
func LoadIdentities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("age identity %s: %v", path, err)
	}
	return ids, nil
}

// encrypter wraps w so that what is written to it is stored encrypted, when the keys say so.
func (k *Keys) encrypter(w io.Writer) (io.WriteCloser, error) {
	if !k.encrypts() {
		return nopCloser{w}, nil
	}
	return age.Encrypt(w, k.Recipients...)
}

// decrypter reads a stored object of a backup with the given encryption.
func (k *Keys) decrypter(r io.Reader, encryption, what string) (io.Reader, error) {
	if encryption == "" {
		return r, nil
	}
	if k == nil || len(k.Identities) == 0 {
		src := "DEPLOYER_AGE_IDENTITY=FILE or -identity FILE"
		if k != nil && k.IdentitySource != "" {
			src = k.IdentitySource
		}
		return nil, fmt.Errorf("%s is encrypted with age: give the identity that decrypts it (%s)", what, src)
	}
	d, err := age.Decrypt(r, k.Identities...)
	if err != nil {
		return nil, fmt.Errorf("%s: decrypt: %v (is it the identity of one of the store's age_recipients?)", what, err)
	}
	return d, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
