# want: 5:3 Unsupported block type | Did you mean "health_check"?
project = "x"
service "web" {
  image = "nginx"
  healthcheck {
    path = "/"
  }
}
