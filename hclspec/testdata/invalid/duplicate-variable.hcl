# want: 4:1 Duplicate variable
project = "x"
variable "a" { default = "1" }
variable "a" { default = "2" }
service "web" { image = "a" }
