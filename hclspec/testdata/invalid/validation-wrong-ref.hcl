# want: 7:21 Invalid reference in variable validation
project = "x"
variable "a" { default = "1" }
variable "b" {
  default = "2"
  validation {
    condition     = var.a == "1"
    error_message = "no."
  }
}
service "a" { image = "a" }
