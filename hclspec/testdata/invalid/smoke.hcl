# want: 12:22 Invalid smoke concurrency | 1 to 256
# want: 13:22 Invalid error rate | fraction
# want: 14:22 Invalid smoke requests | 1 to 100000
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
  }
  smoke {
    concurrency    = 0
    max_error_rate = 2
    requests       = 1000000
  }
}
