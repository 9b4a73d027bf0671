package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

// generated writes a configuration of n services, each with a port, a volume, a health check and
// env built from variables and locals, like a real file repeated.
func generated(b *testing.B, project, image string, n int) string {
	b.Helper()
	dir := b.TempDir()
	var sb strings.Builder
	fmt.Fprintf(&sb, "project = %q\nvariable \"tag\" { default = \"v1\" }\nlocals { region = \"eu\" }\n", project)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, `
service "svc%04d" {
  image = %q
  env = {
    VERSION = var.tag
    REGION  = upper(local.region)
    INDEX   = "%d"
  }
  port {
    container = 8080
    host      = %d
  }
  volume "%s-data%04d" { target = "/data" }
  health_check {
    path     = "/health"
    deadline = "30s"
  }
  deploy { cutover = "restart" }
}
`, i, image, i, 20000+i, project, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

func BenchmarkValidate(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			dir := generated(b, "bench", "app:1", n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, diags := hclspec.Load(hclspec.Options{Dir: dir}); diags.HasErrors() {
					b.Fatal(diags)
				}
			}
		})
	}
}

// BenchmarkPlan plans against the real engine, where every service has a live release (created,
// not started) labelled as apply labels it, so the plan reads and diffs all of them.
func BenchmarkPlan(b *testing.B) {
	eng := dockertest.Engine(b)
	image := dockertest.AppImage(b, eng)
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			project := dockertest.Project(b, eng)
			dir := generated(b, project, image, n)
			res, diags := hclspec.Load(hclspec.Options{Dir: dir})
			if diags.HasErrors() {
				b.Fatal(diags)
			}
			p := res.Project
			ctx := context.Background()
			imageID, err := eng.ImageID(ctx, image)
			if err != nil {
				b.Fatal(err)
			}
			for _, s := range p.Services {
				doc := plan.SpecDoc(p, s, dockertest.Hasher(b, eng, p.Name))
				raw, _ := json.Marshal(doc)
				_, err := eng.CreateContainer(ctx, executor.ContainerSpec{Name: s.ContainerName, Image: image, Labels: map[string]string{
					plan.LabelProject: p.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleLive,
					plan.LabelRelease: "1", plan.LabelSpecDoc: string(raw), plan.LabelSpec: plan.SpecHash(doc, imageID),
				}})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pl, err := executor.MakePlan(ctx, p, eng, plan.PlanOptions{})
				if err != nil {
					b.Fatal(err)
				}
				// The live releases are created, not started: the plan starts them, and changes nothing else.
				if s := pl.Summary; s.Create+s.Replace+s.Delete != 0 || s.Update != n {
					b.Fatalf("plan of an unchanged project: %+v", s)
				}
			}
		})
	}
}
