# want: 12:3 Invalid canary name | canary "with.dot"
# want: 13:3 Invalid sqlite name | sqlite "db/1"
# want: 17:22 Volume listed twice | "data"
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
  }
  volume "data" { target = "/d" }
  canary "with.dot" { path = "/" }
  sqlite "db/1" {
    volume = "data"
    path   = "x.db"
  }
  backup { volumes = ["data", "data"] }
}
