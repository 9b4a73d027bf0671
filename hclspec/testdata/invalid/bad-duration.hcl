# want: 10:16 Invalid duration | "1m30s"
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
  }
  health_check {
    deadline = "60"
  }
}
