# want: 5:8 Missing required argument | "host"
project = "x"
service "web" {
  image = "nginx"
  port {
    container = 80
  }
}
