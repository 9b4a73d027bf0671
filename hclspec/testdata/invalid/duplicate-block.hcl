# want: 6:3 Duplicate deploy block
project = "x"
service "web" {
  image = "a"
  deploy { cutover = "restart" }
  deploy { cutover = "proxy" }
}
