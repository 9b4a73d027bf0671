# want: 3:1 Unsupported block type | Did you mean "service"?
project = "x"
services "web" {
  image = "nginx"
}
