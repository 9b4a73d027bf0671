# want: 5:3 Invalid volume name | Docker volume names
project = "x"
service "a" {
  image = "a"
  volume "d" { target = "/d" }
}
