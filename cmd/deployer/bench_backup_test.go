package main

import (
	"archive/tar"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	_ "modernc.org/sqlite"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
	"github.com/deployer-dev/deployer/executor/plan"
)

// fillVolume streams a tar of one file of n pseudo-random bytes (incompressible: the worst case
// for size and the best for honesty) into the live container's /data.
func fillVolume(b *testing.B, r *cliRig, name string, n int64) {
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: n})
		src := rand.NewChaCha8([32]byte{1})
		_, err := io.CopyN(tw, src, n)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	if err := r.eng.CopyTo(context.Background(), obs.Services["app"].Live.ID, "/data", pr); err != nil {
		b.Fatal(err)
	}
}

// benchRig deploys the app with a backup block to the given store.
func benchRig(b *testing.B, storeHCL string, env []string) *cliRig {
	r := newCLIRig(b)
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	s := strings.Replace(string(cfg), "  deploy {", "  backup {\n    store   = backup_store.bench\n    volumes = [\""+r.project+"-data\"]\n    keep    = 1\n  }\n  deploy {", 1)
	s += storeHCL
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(s), 0o644)
	if out, code := r.run(env, "apply", "-auto-approve"); code != 0 {
		b.Fatalf("apply: %s", out)
	}
	return r
}

// BenchmarkBackup takes on-demand backups with the real binary and reports throughput, the
// process's peak memory, and the pause of the live container.
func BenchmarkBackup(b *testing.B) {
	s3env := s3Env(b)
	for _, store := range []string{"local", "s3"} {
		for _, size := range []int64{100 << 20, 1 << 30} {
			b.Run(fmt.Sprintf("store=%s/size=%dMiB", store, size>>20), func(b *testing.B) {
				hcl := fmt.Sprintf("\nbackup_store \"bench\" {\n  kind      = \"local\"\n  directory = %q\n}\n", b.TempDir())
				var env []string
				if store == "s3" {
					cfg := s3test.Config(b)
					hcl = fmt.Sprintf("\nbackup_store \"bench\" {\n  kind       = \"s3\"\n  bucket     = %q\n  endpoint   = %q\n  path_style = true\n}\n", cfg.Bucket, cfg.Endpoint)
					env = s3env
				}
				r := benchRig(b, hcl, env)
				fillVolume(b, r, "big.bin", size)
				var wall time.Duration
				var peak int64
				var paused float64
				b.SetBytes(size)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					_, d, rss := measured(b, r, env, "backup", "service.app")
					wall += d
					peak = max(peak, rss)
				}
				b.StopTimer()
				out, _ := r.run(env, "backups", "list", "service.app", "-json")
				var l struct{ Backups []backup.Manifest }
				json.Unmarshal([]byte(out), &l)
				if len(l.Backups) > 0 {
					paused = l.Backups[0].PausedSeconds
				}
				b.ReportMetric(float64(size)/(1<<20)/(wall.Seconds()/float64(b.N)), "MiB/s")
				b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
				b.ReportMetric(paused, "paused-s")
			})
		}
	}
}

// BenchmarkPlainCopy is the baseline: the engine's copy stream of the same volume piped straight
// to a plain upload (S3) or file (local), with no compression, checksum or check.
func BenchmarkPlainCopy(b *testing.B) {
	s3env := s3Env(b)
	for _, store := range []string{"local", "s3"} {
		b.Run("store="+store+"/size=1024MiB", func(b *testing.B) {
			const size = 1 << 30
			hcl := fmt.Sprintf("\nbackup_store \"bench\" {\n  kind      = \"local\"\n  directory = %q\n}\n", b.TempDir())
			var st backup.Store = &backup.Local{Dir: b.TempDir()}
			if store == "s3" {
				for _, kv := range s3env {
					k, v, _ := strings.Cut(kv, "=")
					b.Setenv(k, v)
				}
				st = s3test.Store(b, "plain/")
			}
			r := benchRig(b, hcl, nil)
			fillVolume(b, r, "big.bin", size)
			obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rc, err := r.eng.CopyFrom(context.Background(), obs.Services["app"].Live.ID, "/data")
				if err != nil {
					b.Fatal(err)
				}
				if err := st.Put(context.Background(), fmt.Sprintf("plain-%d.tar", i), rc); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}

// sqliteDB writes a SQLite database of about size bytes in the given journal mode: the writer
// app's rows table and a table of incompressible blobs.
func sqliteDB(b *testing.B, size int64, journal string) string {
	file := filepath.Join(b.TempDir(), "app.db")
	conn, err := sql.Open("sqlite", "file:"+file+"?_pragma=journal_mode("+journal+")")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	conn.Exec("CREATE TABLE rows (n INTEGER PRIMARY KEY, at TEXT)")
	conn.Exec("CREATE TABLE pad (id INTEGER PRIMARY KEY, body BLOB)")
	tx, _ := conn.Begin()
	row := make([]byte, 4000)
	src := rand.NewChaCha8([32]byte{7})
	for n := int64(0); n < size; n += int64(len(row)) {
		src.Read(row)
		if _, err := tx.Exec("INSERT INTO pad (body) VALUES (?)", row); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return file
}

// writerGap asks the writer app how far it got and its longest gap between commits (and
// restarts that measure when reset).
func writerGap(b *testing.B, r *cliRig, reset bool) (committed, gapMS int64) {
	c, g, _ := writerGaps(b, r, reset)
	return c, g
}

// writerGaps also says when the writer's gaps over 25 ms ended.
func writerGaps(b *testing.B, r *cliRig, reset bool) (committed, gapMS int64, gaps []writerStall) {
	q := "/writer"
	if reset {
		q += "?reset=1"
	}
	var w struct {
		Committed    int64         `json:"committed"`
		LongestGapMS int64         `json:"longest_gap_ms"`
		Gaps         []writerStall `json:"gaps"`
		Error        string        `json:"error"`
	}
	body := r.get(q)
	if err := json.Unmarshal([]byte(body), &w); err != nil || w.Error != "" {
		b.Fatalf("the writer app: %s", body)
	}
	return w.Committed, w.LongestGapMS, w.Gaps
}

type writerStall struct {
	End time.Time `json:"end"`
	MS  int64     `json:"ms"`
}

// BenchmarkSQLiteBackup backs up a SQLite database in its own volume with the real binary while
// the live release commits a row every 5 ms, and reports how long the live release was paused,
// the writer's longest stall, and the backup's throughput beside the engine's plain copy of the
// same volume: in WAL mode with SQLite's default synchronous = FULL (an fsync per commit) and
// with NORMAL (the usual setting with WAL), and in rollback-journal mode.
func BenchmarkSQLiteBackup(b *testing.B) {
	for _, mode := range []struct{ journal, sync string }{{"wal", "full"}, {"wal", "normal"}, {"delete", "full"}} {
		for _, size := range []int64{100 << 20, 1 << 30} {
			b.Run(fmt.Sprintf("journal=%s/synchronous=%s/size=%dMiB", mode.journal, mode.sync, size>>20), func(b *testing.B) {
				benchSQLiteBackup(b, mode.journal, mode.sync, size)
			})
		}
	}
}

func benchSQLiteBackup(b *testing.B, journal, sync string, size int64) {
	r := newCLIRig(b)
	dbVol := r.project + "-db"
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	base := strings.Replace(string(cfg), "  health_check {", "  volume \""+dbVol+"\" { target = \"/db\" }\n  health_check {", 1)
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(base), 0o644)
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		b.Fatalf("apply: %s", out)
	}
	file := sqliteDB(b, size, journal)
	f, _ := os.Open(file)
	info, _ := f.Stat()
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		tw.WriteHeader(&tar.Header{Name: "app.db", Mode: 0o644, Size: info.Size()})
		_, err := io.Copy(tw, f)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	if err := r.eng.CopyTo(context.Background(), obs.Services["app"].Live.ID, "/db", pr); err != nil {
		b.Fatal(err)
	}
	f.Close()
	// The next release writes to the database while it is backed up.
	withDB := strings.Replace(base, "    APP_DATA        = \"/data\"\n", "    APP_DATA        = \"/data\"\n    APP_WRITER_DB   = \"/db/app.db\"\n    APP_WRITER_JOURNAL = \""+journal+"\"\n    APP_WRITER_SYNC = \""+sync+"\"\n", 1)
	withDB = strings.Replace(withDB, "  health_check {", "  sqlite \"main\" {\n    volume = \""+dbVol+"\"\n    path   = \"app.db\"\n  }\n  backup {\n    store   = backup_store.bench\n    volumes = [\""+dbVol+"\"]\n    keep    = 1\n  }\n  health_check {", 1)
	withDB += fmt.Sprintf("\nbackup_store \"bench\" {\n  kind      = \"local\"\n  directory = %q\n}\n", b.TempDir())
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(withDB), 0o644)
	if out, code := r.run(nil, "apply", "-auto-approve", "-var", "version=v2"); code != 0 {
		b.Fatalf("apply with the writer: %s", out)
	}
	obs, _ = plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	live := obs.Services["app"].Live.ID
	var wall, plain time.Duration
	var paused float64
	var stall, baseline int64
	var peak int64
	b.SetBytes(info.Size())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		writerGap(b, r, true)
		began := time.Now()
		out, d, rss := measured(b, r, nil, "backup", "service.app")
		_, gap, gaps := writerGaps(b, r, false)
		var when []string
		for _, g := range gaps {
			when = append(when, fmt.Sprintf("%d ms at %.2fs", g.MS, g.End.Sub(began).Seconds()))
		}
		b.Logf("backup took %.2fs; the writer's gaps over 25 ms: %s", d.Seconds(), strings.Join(when, ", "))
		wall += d
		peak = max(peak, rss)
		stall = max(stall, gap)
		if !strings.Contains(string(out), "snapshotted online") {
			b.Fatalf("not snapshotted online:\n%s", out)
		}
		b.StopTimer()
		// The same app without a backup, as long: its own checkpoints and fsyncs stall it too.
		writerGap(b, r, true)
		time.Sleep(d)
		_, quiet, qgaps := writerGaps(b, r, false)
		baseline = max(baseline, quiet)
		b.Logf("without a backup, %.2fs: %d gaps over 25 ms, the longest %d ms", d.Seconds(), len(qgaps), quiet)
		start := time.Now()
		rc, err := r.eng.CopyFrom(context.Background(), live, "/db")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		plain += time.Since(start)
		lout, _ := r.run(nil, "backups", "list", "service.app", "-json")
		var l struct{ Backups []backup.Manifest }
		json.Unmarshal([]byte(lout), &l)
		if len(l.Backups) == 0 || len(l.Backups[0].SQLite) != 1 || l.Backups[0].SQLite[0].Result != "ok" {
			b.Fatalf("manifest: %s", lout)
		}
		paused = max(paused, l.Backups[0].PausedSeconds)
		b.StartTimer()
	}
	mib := float64(info.Size()) / (1 << 20)
	b.ReportMetric(mib, "db-MiB")
	b.ReportMetric(paused, "max-paused-s")
	b.ReportMetric(float64(stall), "max-stall-ms")
	b.ReportMetric(float64(baseline), "no-backup-max-stall-ms")
	b.ReportMetric(mib/(wall.Seconds()/float64(b.N)), "backup-MiB/s")
	b.ReportMetric(mib/(plain.Seconds()/float64(b.N)), "plain-copy-MiB/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
}

func s3Env(b *testing.B) []string {
	if os.Getenv(s3test.EnvEndpoint) == "" {
		b.Skip("no S3 server: set " + s3test.EnvEndpoint)
	}
	return []string{"AWS_ACCESS_KEY_ID=" + os.Getenv(s3test.EnvAccessKey), "AWS_SECRET_ACCESS_KEY=" + os.Getenv(s3test.EnvSecretKey), "AWS_REGION=us-east-1"}
}

// BenchmarkBackupEncryption backs up and restores a 1 GiB volume with the real binary, without
// and with age encryption, to the local store and to S3, and reports each one's throughput and
// peak memory. Run it with BenchmarkPlainCopy in the same run for the baseline.
func BenchmarkBackupEncryption(b *testing.B) {
	s3env := s3Env(b)
	const size = 1 << 30
	for _, store := range []string{"local", "s3"} {
		for _, enc := range []string{"plain", "age"} {
			b.Run(fmt.Sprintf("store=%s/enc=%s", store, enc), func(b *testing.B) {
				id, _ := age.GenerateX25519Identity()
				identity := filepath.Join(b.TempDir(), "key.txt")
				os.WriteFile(identity, []byte(id.String()+"\n"), 0o600)
				encHCL := ""
				if enc == "age" {
					encHCL = fmt.Sprintf("  encryption {\n    age_recipients = [%q]\n  }\n", id.Recipient().String())
				}
				hcl := fmt.Sprintf("\nbackup_store \"bench\" {\n  kind      = \"local\"\n  directory = %q\n%s}\n", b.TempDir(), encHCL)
				var env []string
				if store == "s3" {
					cfg := s3test.Config(b)
					hcl = fmt.Sprintf("\nbackup_store \"bench\" {\n  kind       = \"s3\"\n  bucket     = %q\n  endpoint   = %q\n  path_style = true\n%s}\n", cfg.Bucket, cfg.Endpoint, encHCL)
					env = s3env
				}
				env = append(env, "DEPLOYER_AGE_IDENTITY="+identity)
				r := benchRig(b, strings.Replace(hcl, "keep    = 1", "keep    = 3", 1), env)
				fillVolume(b, r, "big.bin", size)
				var backupWall, restoreStep time.Duration
				var backupPeak, restorePeak int64
				b.SetBytes(size)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					out, d, rss := measured(b, r, env, "backup", "service.app")
					backupWall += d
					backupPeak = max(backupPeak, rss)
					id := regexp.MustCompile(`backup (\S+) of release`).FindSubmatch(out)
					if id == nil {
						b.Fatalf("no backup ID in %s", out)
					}
					out, _, rss = measured(b, r, env, "backups", "restore", "service.app", string(id[1]), "-auto-approve", "-json")
					restorePeak = max(restorePeak, rss)
					restoreStep += stepTime(b, out, "restore.")
				}
				b.StopTimer()
				n := float64(b.N)
				b.ReportMetric(float64(size)/(1<<20)/(backupWall.Seconds()/n), "backup-MiB/s")
				b.ReportMetric(float64(backupPeak)/(1<<20), "backup-peak-RSS-MiB")
				b.ReportMetric(float64(size)/(1<<20)/(restoreStep.Seconds()/n), "restore-MiB/s")
				b.ReportMetric(float64(restorePeak)/(1<<20), "restore-peak-RSS-MiB")
			})
		}
	}
}

// measured runs the deployer in the rig and returns its output, how long it took and its peak
// memory (maximum RSS), which GNU time reports for exactly that process (the rusage Go returns
// after a wait can be every child's so far).
func measured(b *testing.B, r *cliRig, env []string, args ...string) ([]byte, time.Duration, int64) {
	start := time.Now()
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "deployer-maxrss-kib=%M", deployerBin(b)}, args...)...)
	cmd.Dir, cmd.Env = r.dir, append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	d := time.Since(start)
	var rss int64
	if m := regexp.MustCompile(`deployer-maxrss-kib=(\d+)`).FindSubmatch(out); m != nil {
		kib, _ := strconv.ParseInt(string(m[1]), 10, 64)
		rss = kib << 10
	} else {
		b.Fatalf("no peak memory from /usr/bin/time in:\n%s", out)
	}
	return out, d, rss
}

// stepTime sums the durations of the steps whose name starts with prefix in -json events.
func stepTime(b *testing.B, out []byte, prefix string) time.Duration {
	var d time.Duration
	for _, line := range strings.Split(string(out), "\n") {
		var e executor.Event
		if json.Unmarshal([]byte(line), &e) == nil && e.Type == executor.EventStep && e.Phase == "end" && strings.HasPrefix(e.Step, prefix) {
			d += time.Duration(e.Seconds * float64(time.Second))
		}
	}
	if d == 0 {
		b.Fatalf("no %s step in:\n%s", prefix, out)
	}
	return d
}
