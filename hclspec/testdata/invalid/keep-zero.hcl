# want: 7:15 Invalid keep
project = "x"
service "a" {
  image = "a"
  volume "d" { target = "/d" }
  backup {
    keep    = 0
    volumes = ["d"]
  }
}
