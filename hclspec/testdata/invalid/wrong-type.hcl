# want: 6:17 Incorrect attribute value type | a number
project = "x"
service "web" {
  image = "nginx"
  port {
    container = "eighty"
    host      = 8080
  }
}
