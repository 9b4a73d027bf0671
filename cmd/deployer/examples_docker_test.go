package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
)

// The examples are applied as a new user applies them, with their own names and fixed ports
// (the seed's: manual-generator on 8080, its candidate on 8081), twice in a row and once more
// with a change; manual-generator backs up to the test S3 server. The names are the examples'
// own, so the test refuses to run where a project of that name exists that it did not make.
func TestExamplesApplied(t *testing.T) {
	eng := dockertest.Engine(t)
	for _, c := range []struct {
		dir, project string
		path         string
		vars         []string
		change       []string
		volumes      []string
	}{
		{"quickstart", "quickstart", "/", nil, []string{"-var", "message=hello again"}, nil},
		{"manual-generator", "manual", "/manuals", nil, []string{"-var", "image_tag=v2"}, []string{"manual_instance", "manual_logs", "manual_uploads"}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			ctx := context.Background()
			if obs, err := executor.Observe(ctx, eng, projectOnly(c.project)); err != nil || len(obs.All) > 0 {
				if os.Getenv("CI") != "" {
					t.Fatalf("project %q exists on this engine: the example's own names are taken", c.project)
				}
				t.Skipf("project %q exists on this engine already: not touching it", c.project)
			}
			for _, port := range []int{8080, 8081} {
				if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
					t.Skipf("port %d is taken here: the example needs it", port)
				} else {
					l.Close()
				}
			}
			t.Cleanup(func() { dockertest.RemoveProject(eng, c.project) })
			dir, _ := filepath.Abs(filepath.Join("../../examples", c.dir))
			t.Cleanup(func() { os.RemoveAll(filepath.Join(dir, ".deployer")) })
			r := &cliRig{t: t, eng: eng, dir: dir, project: c.project, port: 8080}
			var env []string
			vars := c.vars
			if c.dir == "manual-generator" {
				cfg := s3test.Config(t) // a bucket of the test's; the example's bucket is made beside it
				raw := s3test.Client(t)
				raw.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("manual-backups")})
				t.Cleanup(func() { emptyBucket(raw, "manual-backups") })
				vars = append(vars, "-var", "s3_endpoint="+cfg.Endpoint, "-var", "s3_region=us-east-1")
				env = []string{"AWS_ACCESS_KEY_ID=" + os.Getenv(s3test.EnvAccessKey), "AWS_SECRET_ACCESS_KEY=" + os.Getenv(s3test.EnvSecretKey)}
			}
			run := func(args ...string) string {
				t.Helper()
				out, code := r.run(env, append(args, vars...)...)
				if code != 0 {
					t.Fatalf("deployer %s: exit %d\n%s", strings.Join(args, " "), code, out)
				}
				return out
			}
			if out, code := r.run(nil, "fmt", "-check"); code != 0 {
				t.Errorf("the example is not in canonical style (CI runs fmt -check):\n%s", out)
			}
			run("apply", "-auto-approve")
			first := waitBody(t, "http://127.0.0.1:8080"+c.path)
			out := run("apply", "-auto-approve")
			if !strings.Contains(out, "No changes") {
				t.Errorf("the second apply of the same configuration changed something:\n%s", out)
			}
			out = run(append([]string{"apply", "-auto-approve"}, c.change...)...)
			if !strings.Contains(out, "release 2 live") {
				t.Errorf("the change did not deploy release 2:\n%s", out)
			}
			if got := waitBody(t, "http://127.0.0.1:8080"+c.path); got == "" || (c.dir == "quickstart" && (got == first || !strings.Contains(got, "hello again"))) {
				t.Errorf("after the change: %q (before: %q)", got, first)
			}
			if c.dir == "manual-generator" {
				out, code := r.run(env, append([]string{"backups", "list", "service.manual"}, vars...)...)
				if code != 0 || !strings.Contains(out, "-r1") {
					t.Errorf("the backup before the cutover:\n%s", out)
				}
				for _, v := range c.volumes {
					if _, err := eng.Client().VolumeInspect(ctx, v); err != nil {
						t.Errorf("volume %s: %v", v, err)
					}
				}
			}
			if l, err := net.Listen("tcp", "127.0.0.1:8081"); err != nil {
				t.Errorf("the candidate port 8081 is not free after the deploys: %v", err)
			} else {
				l.Close()
			}
		})
	}
}

func waitBody(t *testing.T, url string) string {
	c := &http.Client{Timeout: 2 * time.Second}
	for i := 0; i < 50; i++ {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return strings.TrimSpace(string(b))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%s does not answer", url)
	return ""
}

func emptyBucket(c *s3.Client, bucket string) {
	ctx := context.Background()
	list, _ := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if list != nil {
		for _, o := range list.Contents {
			c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: o.Key})
		}
	}
	c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
}
