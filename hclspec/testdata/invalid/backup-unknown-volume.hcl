# want: 6:22 Unknown volume | "data"
project = "x"
service "a" {
  image = "a"
  volume "data" { target = "/data" }
  backup { volumes = ["data", "logs"] }
}
