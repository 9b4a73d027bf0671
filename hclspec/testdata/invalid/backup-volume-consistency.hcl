# want: 9:5 Volume not backed up | add it to volumes
# want: 10:35 Invalid consistency | "pause", "none"
project = "x"
service "a" {
  image = "a"
  volume "data" { target = "/data" }
  volume "logs" { target = "/logs" }
  backup {
    volume "logs" { consistency = "none" }
    volume "data" { consistency = "freeze" }
    volumes = ["data"]
  }
}
