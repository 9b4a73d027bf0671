package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/executor/plan"

	"github.com/deployer-dev/deployer/config"
)

// Taking over what runs: operators come to the deployer with a service already running, made
// by their shell steps (`docker run`) or by `docker-compose up -d`, under the name the
// configuration gives it. The first apply replaces that container blue-green like a live
// release (its volumes backed up before cutover), and keeps it, recreated with the deployer's
// labels, as the previous release: `deployer rollback` returns to it.

// adoptedLabels are the labels a taken-over container gets when it is recreated as the previous
// release: the deployer's, without compose's (compose would take it back as its own).
func (rl *releases) adoptedLabels(s *config.Service, t *plan.Takeover, original map[string]string) map[string]string {
	rn := rl.rn
	l := map[string]string{}
	for k, v := range original {
		if !strings.HasPrefix(k, "com.docker.compose.") {
			l[k] = v
		}
	}
	doc, _ := json.Marshal(t.Doc)
	for k, v := range map[string]string{
		LabelProject: rn.Project.Name, LabelService: s.Name, LabelRole: plan.RoleLive, LabelRelease: strconv.Itoa(t.Release),
		LabelLiveName: s.ContainerName, LabelImage: t.Image, LabelImageOrigin: plan.OriginFound, plan.LabelTakenOver: t.Made,
		LabelSpecDoc: string(doc), LabelCreatedAt: time.Now().UTC().Format(time.RFC3339),
	} {
		l[k] = v
	}
	return l
}

// adopt returns the taken-over container as the service's live release, for the deploy that
// replaces it.
func (rl *releases) adopt(ctx context.Context, s *config.Service, t *plan.Takeover) (*plan.ServiceState, error) {
	rn := rl.rn
	st, err := rn.Runtime.Inspect(ctx, t.ID)
	if err != nil {
		return nil, fmt.Errorf("the container %s to take over: %w; run plan again", t.Name, err)
	}
	state := "exited"
	if st.Running {
		state = "running"
	}
	c := &Container{ID: st.ID, Name: st.Name, Image: t.Image, ImageID: st.ImageID, State: state, Labels: rl.adoptedLabels(s, t, st.Spec.Labels)}
	return &plan.ServiceState{Name: s.Name, Live: c}, nil
}

// keepSetAside keeps a taken-over container that an interrupted takeover left set aside as the
// previous release; one kept already goes.
func (rl *releases) keepSetAside(ctx context.Context, s *config.Service, t *plan.Takeover, detail string) error {
	rn := rl.rn
	return rn.step(s.Name, plan.StepCleanup, "", detail, func() error {
		if t.Kept {
			return rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), t.ID)
		}
		old, err := rn.Runtime.Inspect(ctx, t.ID)
		if err != nil {
			return err
		}
		if old.Running {
			rl.stopRelease(ctx, s, old.ID, old.Name)
		}
		old.Spec.Labels = rl.adoptedLabels(s, t, old.Spec.Labels)
		return rl.keepAsPrevious(context.WithoutCancel(ctx), s, old)
	})
}
