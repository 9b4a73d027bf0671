# The quickstart: one small web service, built locally FROM scratch, deployed blue-green with a
# health check and a backup of its data volume to the embedded local store (.deployer/backups).
#
#   deployer apply -chdir examples/quickstart -auto-approve
#   curl http://127.0.0.1:8080/

project = "quickstart"

variable "port" {
  type        = number
  default     = 8080
  description = "Host port where the service answers."
}

variable "message" {
  type    = string
  default = "hello from deployer"
}

service "web" {
  image = "quickstart-web:latest"

  build {
    # Compile a static binary first, so the image needs nothing but it.
    before = ["sh", "-c", "CGO_ENABLED=0 go build -trimpath -buildvcs=false -o bin/web ./app"]
  }

  env = {
    MESSAGE  = var.message
    DATA_DIR = "/data"
  }

  port {
    container = 8080
    host      = var.port
  }

  volume "quickstart_data" { target = "/data" }

  health_check {
    path = "/health"
  }

  backup {
    volumes = ["quickstart_data"]
    keep    = 3
  }

  deploy {
    cutover = "proxy" # zero downtime; "restart" stops live first, as the seed did
  }
}
