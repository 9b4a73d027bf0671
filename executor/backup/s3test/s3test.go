// Package s3test connects tests to the real S3 server that .ci/run starts (versitygw), found
// through DEPLOYER_TEST_S3_ENDPOINT, DEPLOYER_TEST_S3_ACCESS_KEY and DEPLOYER_TEST_S3_SECRET_KEY.
// Without them the test fails when CI is set and is skipped otherwise. Each test gets a bucket of
// its own, emptied and removed at the end.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/deployer-dev/deployer/executor/backup"
)

// Env names the variables the tests read.
const (
	EnvEndpoint  = "DEPLOYER_TEST_S3_ENDPOINT"
	EnvAccessKey = "DEPLOYER_TEST_S3_ACCESS_KEY"
	EnvSecretKey = "DEPLOYER_TEST_S3_SECRET_KEY"
)

func endpoint(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: a test of the real S3 server")
	}
	ep := os.Getenv(EnvEndpoint)
	if ep == "" || os.Getenv(EnvAccessKey) == "" || os.Getenv(EnvSecretKey) == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but no S3 server is configured: set %s, %s and %s (.ci/run starts versitygw)", EnvEndpoint, EnvAccessKey, EnvSecretKey)
		}
		t.Skipf("no S3 server: set %s, %s, %s", EnvEndpoint, EnvAccessKey, EnvSecretKey)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", os.Getenv(EnvAccessKey))
	t.Setenv("AWS_SECRET_ACCESS_KEY", os.Getenv(EnvSecretKey))
	t.Setenv("AWS_REGION", "us-east-1")
	return ep
}

// Client is a raw S3 client for the test server.
func Client(t testing.TB) *s3.Client {
	t.Helper()
	ep := endpoint(t)
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(ep)
		o.UsePathStyle = true
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
}

// Config creates a bucket for the test and returns the store configuration for it.
func Config(t testing.TB) backup.S3Config {
	t.Helper()
	c := Client(t)
	b := make([]byte, 4)
	rand.Read(b)
	name := "dt-" + strings.ToLower(hex.EncodeToString(b))
	ctx := context.Background()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		list, _ := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(name)})
		if list != nil {
			for _, o := range list.Contents {
				c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(name), Key: o.Key})
			}
		}
		c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(name)})
	})
	return backup.S3Config{Bucket: name, Endpoint: os.Getenv(EnvEndpoint), PathStyle: true, Region: "us-east-1"}
}

// Store returns an S3 store on a fresh bucket, under prefix.
func Store(t testing.TB, prefix string) *backup.S3 {
	t.Helper()
	cfg := Config(t)
	cfg.Prefix = prefix
	st, err := backup.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Bucket names a store's bucket.
func Bucket(st *backup.S3) string { return st.Bucket() }
