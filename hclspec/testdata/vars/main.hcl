project = "vars"

variable "tag" {
  type    = string
  default = "from-default"
}

variable "replicas" {
  type    = number
  default = 1
}

variable "token" {
  type      = string
  default   = "default-secret"
  sensitive = true
}

variable "labels" {
  type    = map(string)
  default = {}
}

service "web" {
  image = "app:${var.tag}"
  env = merge(var.labels, {
    REPLICAS = tostring(var.replicas)
    TOKEN    = var.token
    UPPER    = upper(var.tag)
    HOME_ENV = env("HOME_FOR_TEST")
    GREETING = trimspace(file("greeting.txt"))
    DERIVED  = "t-${substr(var.token, 0, 3)}"
  })
}
