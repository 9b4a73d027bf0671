# want: 1:1 Missing project
service "web" {
  image = "nginx"
}
