# want: 5:3 Unsupported argument | Did you mean "image"?
project = "x"
service "web" {
  command = ["a"]
  imagee = "nginx"
}
