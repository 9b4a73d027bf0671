package config

import (
	"encoding/json"
	"strconv"
	"time"
)

// Attributes flattens the service's normalized spec into path -> value, the form plans diff,
// hash and record on the containers they create. Each value is a JSON literal ("text", 5, true,
// ["a","b"]), so its type survives. Paths use block labels and container ports rather than
// positions, so reordering blocks changes nothing.
func (s *Service) Attributes() map[string]string {
	a := map[string]string{}
	a["container_name"] = str(s.ContainerName)
	a["image"] = str(s.Image)
	if b := s.Build; b != nil {
		a["build.context"] = str(b.Context)
		a["build.dockerfile"] = str(b.Dockerfile)
		for k, v := range b.Args {
			a["build.args."+k] = str(v)
		}
		if len(b.Before) > 0 {
			a["build.before"] = list(b.Before)
		}
	}
	if len(s.Command) > 0 {
		a["command"] = list(s.Command)
	}
	for k, v := range s.Env {
		a["env."+k] = str(v)
	}
	for _, p := range s.Ports {
		key := "port." + strconv.Itoa(p.Container) + "."
		a[key+"host"] = num(p.Host)
		if p.Candidate != 0 {
			a[key+"candidate"] = num(p.Candidate)
		}
		a[key+"protocol"] = str(p.Protocol)
	}
	for _, v := range s.Volumes {
		a["volume."+v.Name+".target"] = str(v.Target)
	}
	if h := s.HealthCheck; h != nil {
		a["health_check.path"] = str(h.Path)
		if len(h.Status) > 0 {
			a["health_check.status"] = ints(h.Status)
		}
		a["health_check.interval"] = dur(h.Interval)
		a["health_check.timeout"] = dur(h.Timeout)
		a["health_check.healthy"] = num(h.Healthy)
		a["health_check.deadline"] = dur(h.Deadline)
	}
	for _, c := range s.Canaries {
		key := "canary." + c.Name + "."
		a[key+"path"] = str(c.Path)
		if len(c.Status) > 0 {
			a[key+"status"] = ints(c.Status)
		}
		if c.BodyContains != "" {
			a[key+"body_contains"] = str(c.BodyContains)
		}
	}
	for _, d := range s.SQLite {
		key := "sqlite." + d.Name + "."
		a[key+"volume"] = str(d.Volume)
		a[key+"path"] = str(d.Path)
		a[key+"quick_check"] = boolean(d.QuickCheck)
		if len(d.SeedIfEmpty) > 0 {
			a[key+"seed_if_empty"] = list(d.SeedIfEmpty)
		}
	}
	if b := s.Backup; b != nil {
		a["backup.store"] = str(b.Store)
		a["backup.volumes"] = list(b.Volumes)
		a["backup.consistency"] = str(b.Consistency)
		a["backup.keep"] = num(b.Keep)
		a["backup.logs"] = boolean(b.Logs)
	}
	for _, h := range s.Hooks {
		a["hook."+h.When+".command"] = list(h.Command)
	}
	// The settings below appear only when they are set, so that releases made before they
	// existed are not shown as changed.
	if s.Init {
		a["init"] = boolean(true)
	}
	if r := s.Resources; r != nil {
		if r.Memory > 0 {
			a["resources.memory"] = num64(r.Memory)
		}
		if r.CPUs > 0 {
			a["resources.cpus"] = strconv.FormatFloat(r.CPUs, 'f', -1, 64)
		}
	}
	if l := s.Log; l != nil {
		if l.MaxSize != "" {
			a["log.max_size"] = str(l.MaxSize)
		}
		if l.MaxFiles > 0 {
			a["log.max_files"] = num(l.MaxFiles)
		}
	}
	d := s.Deploy
	a["deploy.cutover"] = str(d.Cutover)
	a["deploy.drain"] = dur(d.Drain)
	a["deploy.stop_timeout"] = dur(d.StopTimeout)
	a["deploy.auto_rollback"] = boolean(d.AutoRollback)
	a["deploy.keep_releases"] = num(d.KeepReleases)
	return a
}

func str(v string) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func num(n int) string { return strconv.Itoa(n) }

func num64(n int64) string { return strconv.FormatInt(n, 10) }

func boolean(b bool) string { return strconv.FormatBool(b) }

func list(l []string) string {
	b, _ := json.Marshal(l)
	return string(b)
}

func ints(l []int) string {
	b, _ := json.Marshal(l)
	return string(b)
}

func dur(d time.Duration) string {
	return str(d.String())
}
