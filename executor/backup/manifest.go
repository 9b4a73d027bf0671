package backup

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"time"
)

// Manifest format versions. Version 1 (before encryption and signing) is still read; version 2
// is written. A deployer that reads only version 1 refuses version 2, which is right: it could
// neither decrypt the archives nor check the signature.
const (
	FormatVersion       = "2"
	formatVersionLegacy = "1"
)

// ManifestName is written last in every backup's directory.
const ManifestName = "manifest.json"

// maxManifestBytes bounds what is read of a manifest: it is small, and the store is not trusted.
const maxManifestBytes = 1 << 20

// Manifest describes one complete backup. Everything in it was read from a store that others
// may write to: it is data that is checked against the configuration, never a path, a volume or
// a size the deployer acts on without checking.
type Manifest struct {
	FormatVersion   string          `json:"format_version"`
	ID              string          `json:"id"`
	Project         string          `json:"project"`
	Service         string          `json:"service"`
	Release         int             `json:"release"`
	Image           string          `json:"image,omitempty"`
	ImageID         string          `json:"image_id,omitempty"`
	Created         time.Time       `json:"created"`
	DeployerVersion string          `json:"deployer_version"`
	Reason          string          `json:"reason,omitempty"`
	Consistency     string          `json:"consistency"`
	PausedSeconds   float64         `json:"paused_seconds,omitempty"`
	Volumes         []VolumeArchive `json:"volumes"`
	Logs            *File           `json:"logs,omitempty"`
	SQLite          []DBCheck       `json:"sqlite,omitempty"`
	// Migration is what the deploy this backup was taken before did to the schema: its
	// dry-run's diff and output (read from a store: shown escaped, never acted on).
	Migration *MigrationRecord `json:"migration,omitempty"`
	// Encryption is "age" when every archive and the logs are encrypted to the store's
	// recipients, "" when they are plain.
	Encryption string `json:"encryption,omitempty"`
	// Store is the store the backup was taken into (an S3 bucket and prefix; empty for a local
	// directory): the signature binds it, so a backup copied from another store with the same
	// key is not genuine here.
	Store string `json:"store,omitempty"`
	// Signature is "hmac-sha256:<hex>" of the manifest without it, under the store's
	// signing key; empty when the store has none.
	Signature string `json:"signature,omitempty"`

	// Signed says what the signature check found; it is not part of the manifest.
	Signed Signed `json:"-"`
}

// MigrationRecord is what a migration's dry-run found and printed, and what it printed on the
// live data when it ran there.
type MigrationRecord struct {
	Database    string   `json:"database"`
	Command     string   `json:"command"`
	DryRun      bool     `json:"dry_run"`
	Changes     []string `json:"changes"`
	Destructive bool     `json:"destructive"`
	Output      string   `json:"output,omitempty"`
	LiveOutput  string   `json:"live_output,omitempty"`
}

// Signed is what checking a manifest's signature found.
type Signed string

const (
	SignedOK   Signed = "signed"
	Unsigned   Signed = "unsigned"
	NotChecked Signed = "" // the store has no signing key
	// OtherStore is a manifest signed with the store's key for another store (staging's
	// backups copied into production's bucket): genuine there, not here. It is treated as
	// unsigned: never counted or deleted by retention, restored only with -allow-unsigned.
	OtherStore Signed = "signed for another store"
)

// Trusted reports whether a backup with this signature status is genuine for a store that
// has a signing key.
func (s Signed) Trusted() bool { return s == SignedOK }

// VolumeArchive is one volume's archive: a zstd-compressed tar of the volume's files.
type VolumeArchive struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	File
	Bytes int64 `json:"uncompressed_bytes"`
}

// File is a stored object with its checksum.
type File struct {
	Key    string `json:"key"` // relative to the backup's directory
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// DBCheck records the quick_check of a SQLite database found in the backup.
type DBCheck struct {
	Name   string `json:"name"`
	Volume string `json:"volume"`
	Path   string `json:"path"`
	Result string `json:"quick_check"`
}

// Expect is what a manifest must agree with: the configuration it is read for.
type Expect struct {
	Project string
	Service string
	// DBs are the databases the configuration declares; a manifest may name no other.
	DBs []DB
}

var (
	idRE         = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-r[0-9]{1,9}$`)
	volumeNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
	sha256RE     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidID reports whether s has the form of a backup ID ("20261128T101500.123Z-r7"): only
// directories so named are backups; anything else in a store is not the deployer's.
func ValidID(s string) bool { return idRE.MatchString(s) }

// ValidVolumeName reports whether s is a name Docker accepts for a volume.
func ValidVolumeName(s string) bool { return volumeNameRE.MatchString(s) }

// archiveKey and logsKey are the only object names a backup has: the deployer names them, so a
// manifest cannot point a read at another object.
func archiveKey(volume string, encrypted bool) string {
	return "volume-" + volume + ".tar.zst" + ageSuffix(encrypted)
}

func logsKey(encrypted bool) string { return "logs.txt.zst" + ageSuffix(encrypted) }

func ageSuffix(encrypted bool) string {
	if encrypted {
		return ".age"
	}
	return ""
}

// sign computes the manifest's signature: HMAC-SHA256 over its JSON without the signature.
func (m *Manifest) sign(key []byte) string {
	c := *m
	c.Signature = ""
	b, _ := json.Marshal(&c)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("deployer backup manifest\x00"))
	mac.Write(b)
	return "hmac-sha256:" + hex.EncodeToString(mac.Sum(nil))
}

// tagPrefix starts the name of the empty object that marks a backup as signed with the
// store's key, for listings: see tagName.
const tagPrefix = "signed-"

// tagName is the name of the object that says, from a listing alone, that backup id was taken
// with the store's signing key: 128 bits of an HMAC of the store, the project, the service and
// the ID. A listing reads the manifests of backups so marked first, within a budget of their
// own: junk that someone without the key writes can never keep them from being read.
func tagName(key []byte, store, project, service, id string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("deployer backup tag\x00" + store + "\x00" + project + "\x00" + service + "\x00" + id))
	return tagPrefix + hex.EncodeToString(mac.Sum(nil)[:16])
}

// readManifest reads and checks the manifest of backup id, listed as obj. Every field is
// checked against the configuration (want) and against what the deployer itself would have
// written; with a signing key the signature must match, or be absent (a backup made before the
// key was set). It reads no more than left bytes (errNotRead beyond) and returns how many it
// read.
func readManifest(ctx context.Context, store Store, want Expect, keys *Keys, id string, obj Object, left int64) (*Manifest, int64, error) {
	if left <= 0 {
		return nil, 0, errNotRead
	}
	rc, err := getObject(ctx, store, obj)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, err
	}
	if err != nil {
		return nil, 0, &storeError{err}
	}
	defer rc.Close()
	limit := min(left, maxManifestBytes)
	raw, err := io.ReadAll(io.LimitReader(rc, limit+1))
	n := int64(len(raw))
	if err != nil {
		return nil, n, &storeError{fmt.Errorf("backup %s: read the manifest: %w", id, err)}
	}
	if n > maxManifestBytes {
		return nil, n, fmt.Errorf("backup %s: the manifest is larger than %d bytes: it was not written by the deployer; it is refused", id, maxManifestBytes)
	}
	if n > limit {
		return nil, n, errNotRead
	}
	m, err := parseManifest(raw, want, keys, id, storeIdentity(store))
	return m, n, err
}

// parseManifest checks a manifest's bytes as readManifest does, for the store whose identity
// is given.
func parseManifest(raw []byte, want Expect, keys *Keys, id, store string) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("backup %s: unreadable manifest: %v; it is refused", id, Printable(truncate(err.Error())))
	}
	if err := m.check(want, id); err != nil {
		return nil, fmt.Errorf("backup %s: %w; it is refused", id, err)
	}
	m.Signed = NotChecked
	if key := keys.signingKey(); key != nil {
		switch {
		case m.Signature == "":
			m.Signed = Unsigned
		case !hmac.Equal([]byte(m.Signature), []byte(m.sign(key))):
			return nil, fmt.Errorf("backup %s: the manifest's signature does not match the store's signing key: it was changed by someone without the key, or signed with another key; it is refused", id)
		case m.Store != "" && m.Store != store:
			m.Signed = OtherStore
		default:
			m.Signed = SignedOK
		}
	}
	m.printable()
	return &m, nil
}

// check holds a manifest to what the deployer writes and to the configuration it is read for.
func (m *Manifest) check(want Expect, id string) error {
	switch m.FormatVersion {
	case FormatVersion, formatVersionLegacy:
	default:
		return fmt.Errorf("manifest format %q: this deployer reads %q and %q", m.FormatVersion, formatVersionLegacy, FormatVersion)
	}
	if m.ID != id || !ValidID(m.ID) {
		return fmt.Errorf("the manifest names backup %q, but it is in the directory %s", m.ID, id)
	}
	if m.Project != want.Project || m.Service != want.Service {
		return fmt.Errorf("the manifest is of project %q service %q, not of project %q service %q", m.Project, m.Service, want.Project, want.Service)
	}
	if m.Release < 0 {
		return fmt.Errorf("release %d is negative", m.Release)
	}
	if m.FormatVersion == formatVersionLegacy && (m.Encryption != "" || m.Signature != "") {
		return fmt.Errorf("a format %s manifest with encryption or a signature", formatVersionLegacy)
	}
	encrypted := false
	switch m.Encryption {
	case "":
	case "age":
		encrypted = true
	default:
		return fmt.Errorf("unknown encryption %q", m.Encryption)
	}
	if m.Signature != "" && !strings.HasPrefix(m.Signature, "hmac-sha256:") {
		return fmt.Errorf("unknown signature %q", m.Signature)
	}
	seen := map[string]bool{}
	for _, v := range m.Volumes {
		if !ValidVolumeName(v.Name) {
			return fmt.Errorf("volume name %q is not a Docker volume name", v.Name)
		}
		if seen[v.Name] {
			return fmt.Errorf("volume %s is listed twice", v.Name)
		}
		seen[v.Name] = true
		if err := v.File.check(archiveKey(v.Name, encrypted)); err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if v.Bytes < 0 || v.Bytes > MaxVolumeBytes {
			return fmt.Errorf("volume %s: uncompressed size %d is negative or more than the %s the deployer restores", v.Name, v.Bytes, HumanBytes(MaxVolumeBytes))
		}
	}
	if m.Logs != nil {
		if err := m.Logs.check(logsKey(encrypted)); err != nil {
			return fmt.Errorf("logs: %w", err)
		}
	}
	declared := map[string]bool{}
	for _, db := range want.DBs {
		declared[db.Name] = true
	}
	for _, c := range m.SQLite {
		if !declared[c.Name] {
			return fmt.Errorf("sqlite %q is not a database the configuration declares", c.Name)
		}
		if !seen[c.Volume] {
			return fmt.Errorf("sqlite %q is in volume %q, which the backup does not hold", c.Name, c.Volume)
		}
		if !cleanRelative(c.Path) {
			return fmt.Errorf("sqlite %q: path %q is not a path inside a volume", c.Name, c.Path)
		}
	}
	return nil
}

func (f *File) check(key string) error {
	if f.Key != key {
		return fmt.Errorf("object %q: the deployer names it %q", f.Key, key)
	}
	if f.Size < 0 || f.Size > MaxObjectBytes || !sha256RE.MatchString(f.SHA256) {
		return fmt.Errorf("object %s: size %d or checksum %q is not valid", key, f.Size, f.SHA256)
	}
	return nil
}

// cleanRelative reports whether p is a relative path that stays where it starts.
func cleanRelative(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p {
		return false
	}
	return p != ".." && !strings.HasPrefix(p, "../")
}

// Printable escapes what a terminal would interpret in text read from a store (control
// characters, escape sequences, bidirectional overrides), keeping the rest as it is.
func Printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printableManifest escapes every free-text field, for everything that shows a manifest.
func (m *Manifest) printable() {
	for _, f := range []*string{&m.Image, &m.ImageID, &m.DeployerVersion, &m.Reason, &m.Consistency, &m.Store} {
		*f = Printable(*f)
	}
	for i := range m.Volumes {
		m.Volumes[i].Target = Printable(m.Volumes[i].Target)
	}
	for i := range m.SQLite {
		m.SQLite[i].Result = Printable(m.SQLite[i].Result)
	}
}
