# want: 14:1 Reserved engine name | project's own engine
# want: 17:10 Invalid engine host | not an engine address
# want: 18:3 TLS on a non-TCP engine | tcp:// engines
# want: 25:13 SQLite on several engines | cannot be shared between hosts
# want: 34:13 Backed-up volumes on several engines | Run it on one engine
# want: 45:13 Invalid rollout batch | "50%"
# want: 46:13 Invalid rollout wait | 0s to 1h0m0s
# want: 51:13 Engine listed twice | "web1"
project = "x"
engine "web1" {
  host = "ssh://deploy@203.0.113.10"
}
engine "web2" { host = "tcp://10.0.0.2:2376" }
engine "default" { host = "tcp://10.0.0.3:2376" }
engine "web3" {
  # a host name alone is not an address
  host = "203.0.113.12"
  tls {
    ca = "ca.pem"
  }
}
backup_store "local" {}
service "db" {
  image   = "a"
  engines = [engine.web1, engine.web2]
  volume "data" { target = "/data" }
  sqlite "main" {
    volume = "data"
    path   = "app.db"
  }
}
service "files" {
  image   = "b"
  engines = [engine.web1, engine.web2]
  volume "data" { target = "/data" }
  backup {
    store   = backup_store.local
    volumes = ["data"]
  }
}
service "api" {
  image   = "c"
  engines = [engine.web1, engine.web2]
  rollout {
    batch = "150%"
    wait  = "2h"
  }
}
service "web" {
  image   = "d"
  engines = [engine.web1, "web1"]
}
