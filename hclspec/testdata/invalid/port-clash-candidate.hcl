# want: 15:17 Port used twice | candidate port of service "a"
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
    candidate = 8081
  }
}
service "b" {
  image = "b"
  port {
    container = 80
    host      = 8081
  }
}
