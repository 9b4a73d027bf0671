package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
)

// S3Config says which bucket to use and how to reach it. Credentials come from the default
// chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared config files, an instance role.
type S3Config struct {
	Bucket    string
	Prefix    string
	Region    string
	Endpoint  string // an S3-compatible endpoint (MinIO, R2, versitygw); empty for AWS
	PathStyle bool
	// SSE asks the bucket to encrypt what it stores ("AES256" or "aws:kms"), with KMSKeyID
	// for aws:kms; both are passed through with every upload.
	SSE      string
	KMSKeyID string
}

// S3 is a store in an S3 bucket, under a prefix. The prefix is a directory: "backups" and
// "backups/" both put keys under "backups/", as a local store's directory would. Versions
// before 2026-11-28 joined a prefix without a slash directly ("backupsPROJECT/..."): what they
// stored there is still found, read and deleted, never written.
type S3 struct {
	cfg    S3Config
	prefix string
	legacy string // the old join, when it differs
	client *s3.Client
	tm     *transfermanager.Client
	mu     sync.Mutex
	old    map[string]bool // keys found only under the legacy prefix
}

// NewS3 creates the client; nothing is sent until the first call.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	opts := []func(*awsconfig.LoadOptions) error{}
	region := cfg.Region
	if region == "" {
		region = "us-east-1" // S3-compatible stores ignore it; AWS needs one
	}
	opts = append(opts, awsconfig.WithRegion(region),
		awsconfig.WithLogger(logging.Nop{})) // what goes wrong is returned, never printed by the SDK
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("backup store s3://%s: %w", cfg.Bucket, err)
	}
	// A store that stops sending (or reading) mid-request fails the request once it has been
	// silent for storeIdle, instead of holding a listing, a restore or a deploy's lock forever.
	inner := ac.HTTPClient
	if inner == nil {
		inner = awshttp.NewBuildableClient()
	}
	ac.HTTPClient = &idleClient{inner: inner, idle: storeIdle}
	client := s3.NewFromConfig(ac, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// S3-compatible stores reject the newer default checksums; send them only when required.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	tm := transfermanager.New(client, func(o *transfermanager.Options) {
		o.PartSizeBytes = 8 << 20 // memory: parts in flight x part size
		o.Concurrency = 4
	})
	st := &S3{cfg: cfg, prefix: cfg.Prefix, client: client, tm: tm, old: map[string]bool{}}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		st.prefix, st.legacy = cfg.Prefix+"/", cfg.Prefix
	}
	return st, nil
}

func (s *S3) String() string { return "s3://" + s.cfg.Bucket + "/" + s.prefix }

// identity is what a manifest's signature binds of the store: its bucket and prefix.
func (s *S3) identity() string { return s.String() }

// Bucket is the bucket's name.
func (s *S3) Bucket() string { return s.cfg.Bucket }

func (s *S3) key(k string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.old[k] {
		return s.legacy + k
	}
	return s.prefix + k
}

// Check reaches the bucket with the configured credentials.
func (s *S3) Check(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)})
	return s.explain("reach the bucket", err)
}

// Put streams r as a multipart upload of unknown length; memory stays at parts x concurrency.
func (s *S3) Put(ctx context.Context, key string, r io.Reader) error {
	in := &transfermanager.UploadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.prefix + key), Body: r}
	if s.cfg.SSE != "" {
		in.ServerSideEncryption = tmtypes.ServerSideEncryption(s.cfg.SSE)
	}
	if s.cfg.KMSKeyID != "" {
		in.SSEKMSKeyID = aws.String(s.cfg.KMSKeyID)
	}
	_, err := s.tm.UploadObject(ctx, in)
	return s.explain("upload "+key, err)
}

func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(key))})
	if err != nil {
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) {
			return nil, fmt.Errorf("%s in %s: %w", key, s, ErrNotFound)
		}
		return nil, s.explain("download "+key, err)
	}
	return out.Body, nil
}

func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	out, err := s.list(ctx, s.prefix, prefix)
	if err != nil || s.legacy == "" {
		return out, err
	}
	old, err := s.list(ctx, s.legacy, prefix)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, o := range out {
		have[o.Key] = true
	}
	s.mu.Lock()
	for _, o := range old {
		if !have[o.Key] {
			s.old[o.Key] = true
			out = append(out, o)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// list pages through the keys under base+prefix. Every key and every page counts towards
// maxListObjects, so neither a bucket of millions of keys nor a server that never stops
// answering "truncated" holds it; keys outside what was asked for are dropped.
func (s *S3) list(ctx context.Context, base, prefix string) ([]Object, error) {
	var out []Object
	seen := 0
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(base + prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.explain("list "+prefix, err)
		}
		if seen += 1 + len(page.Contents); seen > maxListObjects {
			return nil, tooMany(s.String(), prefix)
		}
		for _, o := range page.Contents {
			if !strings.HasPrefix(aws.ToString(o.Key), base+prefix) {
				continue
			}
			obj := Object{Key: strings.TrimPrefix(aws.ToString(o.Key), base), Size: aws.ToInt64(o.Size)}
			if o.LastModified != nil {
				obj.Modified = *o.LastModified
			}
			out = append(out, obj)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *S3) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.key(k))})
		if err != nil {
			return s.explain("delete "+k, err)
		}
	}
	return nil
}

// explain turns the SDK's errors into what the operator should check.
func (s *S3) explain(what string, err error) error {
	if err == nil {
		return nil
	}
	where := s.String()
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchBucket", "NotFound":
			if strings.HasPrefix(what, "reach") || ae.ErrorCode() == "NoSuchBucket" {
				return fmt.Errorf("backup store %s: the bucket %q does not exist: create it or fix backup_store.bucket", where, s.cfg.Bucket)
			}
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "InvalidClientTokenId":
			return fmt.Errorf("backup store %s: %s: the credentials were refused (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the profile", where, what, ae.ErrorCode())
		case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException":
			return fmt.Errorf("backup store %s: %s: the bucket is in another region than %q (%s): check backup_store.region", where, what, s.region(), ae.ErrorCode())
		case "BadRequest", "400":
			if strings.HasPrefix(what, "reach") {
				return fmt.Errorf("backup store %s: %s: the store answered 400 Bad Request, which S3 does when the bucket is in another region than %q: check backup_store.region (and endpoint)", where, what, s.region())
			}
		}
		return fmt.Errorf("backup store %s: %s: %s: %s", where, what, Printable(ae.ErrorCode()), Printable(ae.ErrorMessage()))
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Errorf("backup store %s: %s: the endpoint does not answer (%v): check backup_store.endpoint and the network", where, what, rootCause(err))
	}
	var ne net.Error
	if errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("backup store %s: %s: the connection was cut during the transfer (%v); nothing was kept at that key", where, what, rootCause(err))
	}
	return fmt.Errorf("backup store %s: %s: %w", where, what, err)
}

func (s *S3) region() string {
	if s.cfg.Region == "" {
		return "us-east-1"
	}
	return s.cfg.Region
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
