package plan

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// Steps of destroy.
const (
	StepDestroyProxy   StepKind = "proxy"
	StepDestroyNetwork StepKind = "network"
	StepDestroyImages  StepKind = "images"
	StepDestroyVolumes StepKind = "volumes"
	StepDestroyKey     StepKind = "key"
)

// proxyStopGrace is how long the proxy's requests in flight may finish when destroy stops it.
const ProxyStopGrace = 30 * time.Second

// DestroyOptions say what destroy may remove beyond what the deployer made for itself.
type DestroyOptions struct {
	// DeleteVolumes removes the data volumes too, after backing each up.
	DeleteVolumes bool
}

// DestroyPlan is what destroy will remove from one engine and what it keeps, as a value: it is
// shown (text or JSON) before anything is removed.
type DestroyPlan struct {
	FormatVersion string `json:"format_version"`
	Project       string `json:"project"`
	Engine        string `json:"engine"`
	// EngineName names the engine in a configuration with engine blocks.
	EngineName    string     `json:"engine_name,omitempty"`
	DeleteVolumes bool       `json:"delete_volumes"`
	Containers    []Teardown `json:"containers"` // releases, candidates, one-offs, the proxy
	Images        []Teardown `json:"images"`     // those the deployer built or pulled for them
	Networks      []string   `json:"networks"`
	Volumes       []Teardown `json:"volumes"` // the deployer's own, and data volumes with DeleteVolumes
	Backups       []Teardown `json:"backups,omitempty"`
	Kept          []Teardown `json:"kept"` // what stays, and why
	Key           bool       `json:"key"`  // the project's key goes
	// Lock is who holds the deploy lock now, "" when nobody: destroy takes it, as apply does.
	Lock string `json:"lock,omitempty"`

	BackUpFirst []DestroyBackup `json:"-"`
}

// Teardown is one thing destroy removes or keeps.
type Teardown struct {
	Name   string `json:"name"`
	Detail string `json:"detail,omitempty"`
	ID     string `json:"-"`
	// volume: a data volume (its service, for backups).
	service string
	data    bool
}

// destroyBackup is a backup destroy takes before it deletes data volumes: of one service, from
// one of its containers that mounts them.
type DestroyBackup struct {
	Service string
	From    string // container ID
	Volumes []string
	Store   string
}

// PlanDestroy reads what the project has on the engine and says what destroy removes and keeps.
func PlanDestroy(ctx context.Context, p *config.Project, eng engine.Runtime, opts DestroyOptions) (*DestroyPlan, error) {
	if err := eng.Ping(ctx); err != nil {
		return nil, err
	}
	obs, err := Observe(ctx, eng, p)
	if err != nil {
		return nil, err
	}
	all, err := eng.AllContainers(ctx)
	if err != nil {
		return nil, err
	}
	labelled, err := eng.Volumes(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	nets, err := eng.Networks(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	key, err := eng.ReadProjectKey(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	dp := &DestroyPlan{FormatVersion: FormatVersion, Project: p.Name, Engine: eng.Host(), DeleteVolumes: opts.DeleteVolumes,
		Containers: []Teardown{}, Images: []Teardown{}, Networks: nets, Volumes: []Teardown{}, Kept: []Teardown{}, Key: key != nil}
	if dp.Networks == nil {
		dp.Networks = []string{}
	}
	if obs.Lock != nil {
		dp.Lock = DescribeLock(obs.Lock)
	}
	// Containers: the proxy first, then each service's, newest release first.
	mounted := map[string][]*engine.Container{} // volume -> the project's containers that mount it
	for i := range obs.All {
		c := &obs.All[i]
		if c.Role() == RoleLock {
			continue
		}
		dp.Containers = append(dp.Containers, Teardown{Name: c.Name, ID: c.ID, service: c.Service(), Detail: describeTeardown(c)})
		for _, v := range c.Mounts {
			mounted[v] = append(mounted[v], c)
		}
	}
	sort.SliceStable(dp.Containers, func(i, j int) bool {
		return dp.Containers[i].service == "" && dp.Containers[j].service != "" ||
			dp.Containers[i].service != "" && dp.Containers[j].service != "" && dp.Containers[i].service < dp.Containers[j].service
	})
	// Images the deployer made for the releases; not one a container of anything else runs.
	others := map[string]string{}  // image ID -> a container of something else that runs it
	users := map[string][]string{} // volume -> containers of something else that mount it
	for _, c := range all {
		if c.Labels[engine.LabelProject] == p.Name {
			continue
		}
		others[c.ImageID] = c.Name
		for _, v := range c.Mounts {
			users[v] = append(users[v], DescribeOwner(c))
		}
	}
	seen := map[string]bool{}
	for _, c := range obs.All {
		if c.Service() == "" || !ImageOwned(&c) || seen[c.ImageID] {
			continue
		}
		seen[c.ImageID] = true
		if user := others[c.ImageID]; user != "" {
			dp.Kept = append(dp.Kept, Teardown{Name: "image " + c.ImageRef(), Detail: "container " + user + " runs it too"})
			continue
		}
		dp.Images = append(dp.Images, Teardown{Name: c.ImageRef(), ID: c.ImageID, Detail: Short(c.ImageID)})
	}
	// The deployer's own volumes, by their labels.
	ownVolume := map[string]bool{}
	for _, v := range labelled {
		if v.Labels[engine.LabelKey] == "" && (v.Labels[engine.LabelRole] == RoleData || v.Labels[engine.LabelRole] == RoleProxy) {
			if _, ok := mounted[v.Name]; ok {
				continue // the services' data and the proxy's state: below, by who mounts them
			}
		}
		ownVolume[v.Name] = true
		switch {
		case v.Labels[engine.LabelKey] != "":
			// the key: removed with RemoveProjectKey, named here
			dp.Volumes = append(dp.Volumes, Teardown{Name: v.Name, Detail: "the project's key"})
		case v.Labels[engine.LabelRole] == RoleScratch:
			dp.Volumes = append(dp.Volumes, Teardown{Name: v.Name, ID: v.Name, Detail: "scratch space an interrupted backup or migration left"})
		case v.Labels[engine.LabelRole] == RoleSafety:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + v.Name, Detail: fmt.Sprintf("the safety copy of volume %s that an interrupted migration of service.%s made: remove it by hand once its data is not needed", v.Labels[LabelVolume], v.Labels[engine.LabelService])})
		case v.Labels[engine.LabelRole] == RoleProxy && v.Name == ProxyStateVolume(p):
			// an interrupted destroy removed the proxy before its state
			dp.Volumes = append(dp.Volumes, Teardown{Name: v.Name, ID: v.Name, Detail: "the proxy's routes"})
		case v.Labels[engine.LabelRole] == RoleData:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + v.Name, Detail: "data the project's services used, mounted by no container now: remove it by hand (`docker volume rm`) once its data is not needed"})
		default:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + v.Name, Detail: fmt.Sprintf("labelled for the project with role %q, which this deployer does not know", v.Labels[engine.LabelRole])})
		}
	}
	// The volumes the containers mount: the proxy's state, and the services' data.
	for _, name := range SortedKeys(mounted) {
		if ownVolume[name] {
			continue
		}
		byProxy, services := false, map[string]bool{}
		for _, c := range mounted[name] {
			if c.Role() == RoleProxy {
				byProxy = true
			} else if c.Service() != "" {
				services[c.Service()] = true
			}
		}
		switch {
		case len(users[name]) > 0:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + name, Detail: "also mounted by " + strings.Join(users[name], ", ")})
		case byProxy && len(services) == 0 && name == ProxyName(p.Name)+"-state":
			dp.Volumes = append(dp.Volumes, Teardown{Name: name, ID: name, Detail: "the proxy's routes"})
		case len(services) != 1:
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + name, Detail: "mounted by the proxy and by services, or by more than one service: remove it by hand"})
		case !opts.DeleteVolumes:
			svc := SortedKeys(services)[0]
			dp.Kept = append(dp.Kept, Teardown{Name: "volume " + name, service: svc, data: true, Detail: fmt.Sprintf("data of service.%s (destroy -delete-volumes removes it, after a backup)", svc)})
		default:
			svc := SortedKeys(services)[0]
			dp.Volumes = append(dp.Volumes, Teardown{Name: name, ID: name, service: svc, data: true, Detail: fmt.Sprintf("data of service.%s, after its backup", svc)})
		}
	}
	if opts.DeleteVolumes {
		dp.planBackups(p, obs)
	}
	red := NewRedactor(p)
	for _, list := range [][]Teardown{dp.Containers, dp.Images, dp.Volumes, dp.Backups, dp.Kept} {
		for i := range list {
			list[i].Name, list[i].Detail = red.Redact(list[i].Name), red.Redact(list[i].Detail)
		}
	}
	return dp, nil
}

// describeTeardown says what a container of the project is.
func describeTeardown(c *engine.Container) string {
	switch c.Role() {
	case RoleProxy:
		return fmt.Sprintf("the project's proxy and its routes (%s)", c.State)
	case RoleOneOff:
		return fmt.Sprintf("a one-off container of service.%s (%s)", c.Service(), c.State)
	}
	role := c.Role()
	if ln := c.Labels[engine.LabelLiveName]; ln != "" && c.Name == ln {
		role = RoleLive
	}
	return fmt.Sprintf("release %d of service.%s (%s, %s)", c.Release(), c.Service(), role, c.State)
}

// Empty reports whether there is nothing to remove.
func (dp *DestroyPlan) Empty() bool {
	return len(dp.Containers) == 0 && len(dp.Images) == 0 && len(dp.Networks) == 0 && len(dp.Volumes) == 0 && !dp.Key
}

// planBackups decides the backups that come before the data volumes go: for each service, from
// its live release (else the newest container of it) that mounts them.
func (dp *DestroyPlan) planBackups(p *config.Project, obs *Observed) {
	byService := map[string][]string{}
	for _, v := range dp.Volumes {
		if v.data {
			byService[v.service] = append(byService[v.service], v.Name)
		}
	}
	for _, svc := range SortedKeys(byService) {
		st := obs.Services[svc]
		var order []*engine.Container
		if st != nil {
			order = append(order, st.Live)
			order = append(order, st.Previous...)
			order = append(order, st.Others...)
			order = append(order, st.Candidates...)
		}
		left := byService[svc]
		for _, c := range order {
			if c == nil || len(left) == 0 {
				continue
			}
			var these, rest []string
			for _, v := range left {
				if Contains(c.Mounts, v) {
					these = append(these, v)
				} else {
					rest = append(rest, v)
				}
			}
			if len(these) == 0 {
				continue
			}
			left = rest
			store := config.DefaultStoreName
			if s := p.Service(svc); s != nil && s.Backup != nil {
				store = s.Backup.Store
			}
			b := DestroyBackup{Service: svc, From: c.ID, Volumes: these, Store: store}
			dp.BackUpFirst = append(dp.BackUpFirst, b)
			dp.Backups = append(dp.Backups, Teardown{Name: "service." + svc, service: svc,
				Detail: fmt.Sprintf("volumes %s from release %d (%s) to backup_store.%s", strings.Join(these, ", "), c.Release(), c.Name, store)})
		}
	}
}

// WriteText shows what destroy will do.
func (dp *DestroyPlan) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "Project %q on %s\n", dp.Project, dp.Engine)
	if dp.Empty() {
		if len(dp.Kept) == 0 {
			_, err := fmt.Fprintf(w, "\nNothing to destroy: the project has nothing on this engine.\n")
			return err
		}
		// A destroy before this one kept the data: say so again, and that nothing else is left.
		fmt.Fprintf(w, "\nNothing to destroy: the project has nothing else on this engine.\n")
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "\nKept:\n")
		for _, k := range dp.Kept {
			fmt.Fprintf(tw, "      %s\t%s\n", k.Name, k.Detail)
		}
		return tw.Flush()
	}
	if dp.Lock != "" {
		fmt.Fprintf(w, "\nThe deploy lock is held by %s: destroy waits for it as apply does.\n", dp.Lock)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if len(dp.Backups) > 0 {
		fmt.Fprintf(tw, "\nBacked up first (-delete-volumes):\n")
		for _, b := range dp.Backups {
			fmt.Fprintf(tw, "  +   backup of %s\t%s\n", b.Name, b.Detail)
		}
	}
	if !dp.Empty() {
		fmt.Fprintf(tw, "\nRemoved:\n")
	}
	for _, c := range dp.Containers {
		fmt.Fprintf(tw, "  -   container %s\t%s\n", c.Name, c.Detail)
	}
	for _, i := range dp.Images {
		fmt.Fprintf(tw, "  -   image %s\t%s\n", i.Name, i.Detail)
	}
	for _, n := range dp.Networks {
		fmt.Fprintf(tw, "  -   network %s\t\n", n)
	}
	for _, v := range dp.Volumes {
		fmt.Fprintf(tw, "  -   volume %s\t%s\n", v.Name, v.Detail)
	}
	if dp.Key && !dp.hasKeyVolume() {
		fmt.Fprintf(tw, "  -   the project's key\t\n")
	}
	if len(dp.Kept) > 0 {
		fmt.Fprintf(tw, "\nKept:\n")
		for _, k := range dp.Kept {
			fmt.Fprintf(tw, "      %s\t%s\n", k.Name, k.Detail)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nBackups in the backup stores are kept.\n")
	_, err := fmt.Fprintf(w, "Destroy: %s, %s, %s, %s to remove; %s kept.\n", Plural(len(dp.Containers), "container"),
		Plural(len(dp.Images), "image"), Plural(len(dp.Networks), "network"), Plural(len(dp.Volumes), "volume"), Plural(len(dp.Kept), "thing"))
	return err
}

func (dp *DestroyPlan) hasKeyVolume() bool {
	for _, v := range dp.Volumes {
		if v.Detail == "the project's key" {
			return true
		}
	}
	return false
}

// removableVolumes are the volumes of the plan removed by name (the key goes by
// RemoveProjectKey).
func (dp *DestroyPlan) RemovableVolumes() []string {
	var out []string
	for _, v := range dp.Volumes {
		if v.ID != "" {
			out = append(out, v.ID)
		}
	}
	return out
}
