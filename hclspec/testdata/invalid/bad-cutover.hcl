# want: 5:22 Invalid cutover | "proxy", "restart"
project = "x"
service "a" {
  image = "a"
  deploy { cutover = "rolling" }
}
