# want: 5:20 Invalid duration
project = "x"
service "a" {
  image = "a"
  deploy { drain = "-5s" }
}
