# want: 6:3 Duplicate volume
project = "x"
service "web" {
  image = "a"
  volume "data" { target = "/a" }
  volume "data" { target = "/b" }
}
