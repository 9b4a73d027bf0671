# want: 3:1 No value for required variable | -var tag=VALUE
project = "x"
variable "tag" { type = string }
service "a" { image = "a:${var.tag}" }
