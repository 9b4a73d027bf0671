# want: 8:17 Candidate port equals host port
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
    candidate = 8080
  }
}
