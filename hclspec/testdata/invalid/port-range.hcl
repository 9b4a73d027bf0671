# want: 7:17 Invalid port | out of range
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 70000
  }
}
