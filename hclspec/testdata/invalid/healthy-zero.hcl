# want: 9:28 Invalid healthy count
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
  }
  health_check { healthy = 0 }
}
