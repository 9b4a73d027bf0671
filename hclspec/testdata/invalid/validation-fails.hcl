# want: 5:13 Invalid value for variable | tag must not be empty
project = "x"
variable "tag" {
  type    = string
  default = ""
  validation {
    condition     = length(var.tag) > 0
    error_message = "tag must not be empty."
  }
}
service "a" { image = "a:${var.tag}" }
