# want: 4:34 Reference to undeclared input variable | Did you mean "tag"?
project = "x"
variable "tag" { default = "1" }
service "web" { image = "nginx:${var.tga}" }
