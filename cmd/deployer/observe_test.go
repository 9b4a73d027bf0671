package main

import "github.com/deployer-dev/deployer/config"

// projectOnly is a project without its configuration, for tests that look at what runs: each
// service's names are read from what its releases recorded (see executor.Observe).
func projectOnly(name string) *config.Project { return &config.Project{Name: name} }
