# want: 7:15 Invalid keep
project = "x"
service "a" {
  image = "a"
  volume "dd" { target = "/d" }
  backup {
    keep    = 0
    volumes = ["dd"]
  }
}
