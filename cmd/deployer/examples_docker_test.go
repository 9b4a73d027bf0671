package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/deployer-dev/deployer/executor/backup/s3test"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
)

// The examples are applied as a new user applies them, twice in a row and once more with a
// change; manual-generator backs up to the test S3 server. Each is a copy under names and ports
// of the test's own (copyExample): the example's own belong to whoever deployed it on this
// engine (the README's first command deploys the quickstart on :8080), and stay untouched.
func TestExamplesApplied(t *testing.T) {
	for _, c := range []struct {
		dir    string
		host   int // the example's host port; the copy's is a free one
		path   string
		change []string
	}{
		{"quickstart", 8080, "/", []string{"-var", "message=hello again"}},
		{"manual-generator", 8080, "/manuals", []string{"-var", "image_tag=v2"}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			eng := dockertest.Engine(t)
			ctx := context.Background()
			ex := copyExample(t, c.dir, exampleScratch(t), dockertest.Project(t, eng))
			port := ex.Ports[c.host]
			r := &cliRig{t: t, eng: eng, dir: ex.Dir, project: ex.Project, port: port}
			var env, vars []string
			if c.dir == "manual-generator" {
				cfg := s3test.Config(t) // a bucket of the test's; the copy's bucket is made beside it
				raw := s3test.Client(t)
				bucket := ex.Project + "-backups"
				if _, err := raw.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
					t.Fatalf("bucket %s: %v", bucket, err)
				}
				t.Cleanup(func() { emptyBucket(raw, bucket) })
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
			url := fmt.Sprintf("http://127.0.0.1:%d%s", port, c.path)
			first := waitBody(t, url)
			out := run("apply", "-auto-approve")
			if !strings.Contains(out, "No changes") {
				t.Errorf("the second apply of the same configuration changed something:\n%s", out)
			}
			out = run(append([]string{"apply", "-auto-approve"}, c.change...)...)
			if !strings.Contains(out, "release 2 live") {
				t.Errorf("the change did not deploy release 2:\n%s", out)
			}
			if got := waitBody(t, url); got == "" || (c.dir == "quickstart" && (got == first || !strings.Contains(got, "hello again"))) {
				t.Errorf("after the change: %q (before: %q)", got, first)
			}
			if c.dir == "manual-generator" {
				out, code := r.run(env, append([]string{"backups", "list", "service.manual"}, vars...)...)
				if code != 0 || !strings.Contains(out, "-r1") {
					t.Errorf("the backup before the cutover:\n%s", out)
				}
				for _, v := range []string{"instance", "logs", "uploads"} {
					if _, err := eng.Client().VolumeInspect(ctx, ex.Project+"_"+v); err != nil {
						t.Errorf("volume %s_%s: %v", ex.Project, v, err)
					}
				}
			}
			for example, candidate := range ex.Ports {
				if example == c.host {
					continue
				}
				if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", candidate)); err != nil {
					t.Errorf("the candidate port %d (the example's %d) is not free after the deploys: %v", candidate, example, err)
				} else {
					l.Close()
				}
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
