# want: 14:17 Port used twice | service "a"
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
  }
}
service "b" {
  image = "b"
  port {
    container = 80
    host      = 8080
  }
}
