package plan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// FormatVersion is the version of the JSON form of plans and events. It changes only when a
// field changes meaning or goes away.
const FormatVersion = "1"

// Action is what a plan does to a service.
type Action string

const (
	ActionNone    Action = "no-op"
	ActionCreate  Action = "create"
	ActionReplace Action = "replace" // blue-green
	ActionUpdate  Action = "update"  // in place: start a stopped live release
	ActionDelete  Action = "delete"
	// ActionTakeover replaces, blue-green, a container of the service's name that the deployer
	// did not make, and keeps it as the previous release.
	ActionTakeover Action = "takeover"
)

// Symbol is the plan's mark for the action, after Terraform's.
func (a Action) Symbol() string {
	switch a {
	case ActionCreate:
		return "+"
	case ActionReplace, ActionTakeover:
		return "+/-"
	case ActionUpdate:
		return "~"
	case ActionDelete:
		return "-"
	}
	return " "
}

// Plan is what apply will do, as a value: it is rendered as text or JSON, saved with -out, and
// drives apply. It never holds a sensitive value.
type Plan struct {
	FormatVersion string     `json:"format_version"`
	Project       string     `json:"project"`
	Engine        string     `json:"engine"`
	Changes       []*Change  `json:"changes"`
	Steps         []*Step    `json:"steps"`
	Leftovers     []Leftover `json:"leftovers,omitempty"`
	// Ignored are containers labelled for the project that are none of its own: apply leaves
	// them as they are.
	Ignored     []Ignored   `json:"ignored,omitempty"`
	Summary     Summary     `json:"summary"`
	Fingerprint Fingerprint `json:"fingerprint"`
	// Warnings are what apply may stop at that plan could not settle (a backup store it
	// cannot reach from here): printed on stderr, the plan stands.
	Warnings []string `json:"warnings,omitempty"`

	hasher *Hasher // the project's key, never saved
	// keyless: the project had no key on the engine (nothing was applied yet), and the plan
	// hashed sensitive values under a key of its own, which nothing can check later.
	keyless bool
}

// Summary counts the changes.
type Summary struct {
	Create   int `json:"create"`
	Replace  int `json:"replace"`
	Update   int `json:"update"`
	Delete   int `json:"delete"`
	TakeOver int `json:"take_over"`
}

// Fingerprint identifies what a plan was made from, so that a saved plan is applied only to the
// same state and configuration.
type Fingerprint struct {
	State  string `json:"state"`
	Config string `json:"config"`
}

// Change is the plan for one service.
type Change struct {
	Service    string       `json:"service"`
	Action     Action       `json:"action"`
	Reasons    []string     `json:"reasons,omitempty"`
	Attributes []AttrChange `json:"attributes,omitempty"`

	Container   string   `json:"container,omitempty"` // the live container name after apply
	LiveRelease int      `json:"live_release,omitempty"`
	LiveImageID string   `json:"live_image_id,omitempty"`
	NextRelease int      `json:"next_release,omitempty"`
	Image       string   `json:"image,omitempty"`
	ImageID     string   `json:"image_id,omitempty"` // empty when apply builds or pulls it
	ContextHash string   `json:"context_hash,omitempty"`
	SpecHash    string   `json:"spec_hash,omitempty"` // when the image ID is known
	RemoveIDs   []string `json:"remove_container_ids,omitempty"`
	// Prune are the previous releases beyond keep_releases that the clean-up removes.
	Prune []Pruned `json:"prune,omitempty"`
	// Engines are the engines the live release was deployed to (name -> address), as it
	// recorded them (configurations with engine blocks).
	Engines map[string]string `json:"recorded_engines,omitempty"`
	// Takeover is the container of the service's name the deployer did not make, which this
	// apply takes over.
	Takeover *Takeover `json:"takeover,omitempty"`
	// Unverified: the live release runs, but under the name it waits under until it is
	// verified: an apply started it and was interrupted before its health check passed. The
	// update health-checks it again before it takes its live name back.
	Unverified bool `json:"unverified,omitempty"`
	// PortHandover: the cutover moves the host ports between the live release and the proxy,
	// as the service's cutover changed: HandoverToProxy, HandoverFromProxy, or "".
	PortHandover string `json:"port_handover,omitempty"`
}

// The port handovers of a change of cutover: the live release of the restart cutover publishes
// the host ports itself, and the proxy takes them when it stops (to_proxy); the proxy holds
// them for a live release of the proxy cutover, and gives them to the new release, which
// publishes them itself (from_proxy). Either is a restart's window without service, once.
const (
	HandoverToProxy   = "to_proxy"
	HandoverFromProxy = "from_proxy"
)

// Pruned is a release the clean-up removes, and whether its image goes with it: only an image
// the deployer built or pulled itself does.
type Pruned struct {
	Release     int    `json:"release"`
	Container   string `json:"container"`
	Image       string `json:"image"`
	ImageID     string `json:"image_id"`
	RemoveImage bool   `json:"remove_image"`
	KeptBecause string `json:"image_kept_because,omitempty"`
}

// AttrChange is one attribute that differs. Old and New are JSON values; sensitive ones are
// the string "(sensitive)".
type AttrChange struct {
	Path      string          `json:"path"`
	Old       json.RawMessage `json:"old,omitempty"`
	New       json.RawMessage `json:"new,omitempty"`
	HasOld    bool            `json:"has_old"`
	HasNew    bool            `json:"has_new"`
	Sensitive bool            `json:"sensitive,omitempty"`
	Default   bool            `json:"default,omitempty"` // the new value is a default
}

// Leftover is something an interrupted apply left behind, which the next apply deals with.
type Leftover struct {
	Service string       `json:"service,omitempty"`
	Kind    LeftoverKind `json:"kind"`
	Detail  string       `json:"detail"`
}

// LeftoverKind says what was left.
type LeftoverKind string

// Kinds of leftovers.
const (
	LeftoverLock         LeftoverKind = "lock"          // the deploy lock, held or left
	LeftoverProxy        LeftoverKind = "proxy"         // the proxy is not running
	LeftoverProxyUpgrade LeftoverKind = "proxy-upgrade" // an upgrade of the proxy was interrupted
	LeftoverCandidate    LeftoverKind = "candidate"     // a candidate (or one-off container)
	LeftoverStoppedLive  LeftoverKind = "stopped-live"  // the live release is not running
	LeftoverExtra        LeftoverKind = "extra"         // a release set aside by a cutover
	LeftoverScratch      LeftoverKind = "scratch"       // a backup's scratch volume
)

// PlanOptions narrow a plan.
type PlanOptions struct {
	Targets []string // service names; empty means all
	// Remote: the engine's published ports are not reached at its address from here (an
	// engine block's engine), so the checks run from its proxy.
	Remote bool
	// Release is, by service, the number a new release takes when the engine keeps no release
	// as high (a leftover candidate's number is free: it is removed first), else the lowest it
	// may take: a service on several engines has one release number on all of them.
	Release map[string]int
	// MakeKey makes the project's key when it has none (plan -out: a saved plan's fingerprint
	// hashes sensitive values under it). Without, a plan makes nothing on the engine.
	MakeKey bool
	// ProbeHost is where the engine's published ports are reached from here: on a local
	// engine, plan checks there that no process outside Docker holds the ports it needs. ""
	// skips that check.
	ProbeHost string
	// CheckStore checks that a backup store answers, without writing; ProxyRoutes asks the
	// project's running proxy for its routes. Both reach past the engine, so the executor
	// supplies them (executor.MakePlan); a nil one skips its check.
	CheckStore  func(ctx context.Context, p *config.Project, store string) error
	ProxyRoutes RouteReader
}

// RouteReader asks a project's proxy container for its routes.
type RouteReader func(ctx context.Context, eng engine.Engine, proxyID string) ([]Route, error)

// Route is one route of a project's proxy: its name and the backend it sends requests to.
type Route struct{ Name, Backend string }

// HasChanges reports whether applying the plan would do anything.
func (p *Plan) HasChanges() bool {
	for _, c := range p.Changes {
		if c.Action != ActionNone {
			return true
		}
	}
	return false
}

// Change returns the change of a service, or nil.
func (p *Plan) Change(service string) *Change {
	for _, c := range p.Changes {
		if c.Service == service {
			return c
		}
	}
	return nil
}

// SpecDoc is the normalized spec of a service as recorded on its containers, with sensitive
// values hashed by the project's key.
func SpecDoc(p *config.Project, s *config.Service, h *Hasher) map[string]string {
	doc := s.Attributes()
	for k, v := range doc {
		if p.IsSensitive(s.Name, k) {
			doc[k] = h.Sensitive(v)
		}
	}
	return doc
}

// SpecHash is the deployer.spec label: the normalized spec plus the image ID.
func SpecHash(doc map[string]string, imageID string) string {
	b, _ := json.Marshal(doc) // map keys marshal sorted
	h := sha256.New()
	h.Write(b)
	h.Write([]byte{0})
	h.Write([]byte(imageID))
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// ConfigFingerprint hashes everything of the configuration that apply acts on, sensitive values
// included (by their keyed hash), plus the build context hashes.
func ConfigFingerprint(p *config.Project, contextHashes map[string]string, hs *Hasher) string {
	h := sha256.New()
	fmt.Fprintf(h, "project %s\ndocker %s\n", p.Name, hs.Sensitive(p.Docker.Host))
	for _, s := range p.Services {
		b, _ := json.Marshal(SpecDoc(p, s, hs))
		fmt.Fprintf(h, "service %s %s %s\n", s.Name, b, contextHashes[s.Name])
	}
	for _, name := range SortedKeys(p.Stores) {
		st := *p.Stores[name]
		st.SigningKey = hs.Sensitive(st.SigningKey)
		st.Ranges = nil
		b, _ := json.Marshal(st)
		fmt.Fprintf(h, "store %s\n", hs.Sensitive(string(b)))
	}
	for _, n := range p.Notifies {
		fmt.Fprintf(h, "notify %s %s %s %q\n", n.Kind, n.Name, hs.Sensitive(n.URL), n.On)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// StateFingerprint hashes the observed containers and the image IDs the plan resolved.
func StateFingerprint(o *Observed, imageIDs map[string]string) string {
	var lines []string
	for _, c := range o.All {
		lines = append(lines, strings.Join([]string{c.ID, c.ImageID, c.State, c.Labels[engine.LabelRole], c.Labels[engine.LabelSpec]}, " "))
	}
	for ref, id := range imageIDs {
		lines = append(lines, "image "+ref+" "+id)
	}
	sort.Strings(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// redact masks sensitive values in everything of the plan that is text: it is printed, saved
// and passed around as a CI artifact.
func (plan *Plan) redact(red *Redactor) {
	for _, c := range plan.Changes {
		c.Image = red.Redact(c.Image)
		for i := range c.Reasons {
			c.Reasons[i] = red.Redact(c.Reasons[i])
		}
	}
	for _, st := range plan.Steps {
		st.Detail = red.Redact(st.Detail)
	}
	for i := range plan.Leftovers {
		plan.Leftovers[i].Detail = red.Redact(plan.Leftovers[i].Detail)
	}
	for i := range plan.Ignored {
		plan.Ignored[i].Reason = red.Redact(plan.Ignored[i].Reason)
	}
}

// HashSensitive is the recorded form of a sensitive value under the project's key, as the plan
// was made with it (for a saved plan's variables).
func (plan *Plan) HashSensitive(v string) string { return plan.hasher.Sensitive(v) }

// Keyless reports whether the plan was made without the project's key (none existed): its
// fingerprint and hashes cannot be compared with those of another plan.
func (plan *Plan) Keyless() bool { return plan.keyless }

func Contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
