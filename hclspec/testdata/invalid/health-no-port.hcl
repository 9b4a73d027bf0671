# want: 5:3 Health check without an HTTP port
project = "x"
service "a" {
  image = "a"
  health_check { path = "/health" }
}
