# want: 7:27 Reference to undeclared engine | "web9"
project = "x"
engine "web1" { host = "ssh://deploy@203.0.113.10" }
engine "web2" { host = "ssh://deploy@203.0.113.11" }
service "api" {
  image   = "c"
  engines = [engine.web1, engine.web9]
}
