# The seed's service, "Manual Generator", exactly as the language reference writes it. The app
# here is a stand-in with the same endpoints, scripts and volumes (see app/).

project = "manual"

variable "image_tag" {
  type        = string
  default     = "latest"
  description = "Tag of the image to deploy; CI passes the commit."
}

variable "slack_webhook" {
  type      = string
  default   = ""
  sensitive = true # never printed: plans, logs, JSON and notices show (sensitive)
}

variable "docker_host" {
  type        = string
  default     = "unix:///var/run/docker.sock"
  description = "The engine: CI deploys over ssh://deploy@HOST."
}

variable "s3_endpoint" {
  type        = string
  default     = ""
  description = "An S3-compatible endpoint instead of AWS (MinIO, R2, versitygw)."
}

variable "s3_region" {
  type    = string
  default = "ap-northeast-1"
}

locals {
  db_dir = "/app/instance"
}

docker {
  host = var.docker_host # optional; default: DOCKER_HOST, then the local socket
}

backup_store "s3" { # label: the store's name, referenced as backup_store.s3
  bucket     = "manual-backups"
  prefix     = "manual-generator/"
  region     = var.s3_region
  endpoint   = var.s3_endpoint       # optional: an S3-compatible endpoint (MinIO, R2, versitygw)
  path_style = var.s3_endpoint != "" # S3-compatible stores want path-style addresses
}
# The embedded default needs no cloud:  backup_store "local" { directory = ".deployer/backups" }

service "manual" {
  container_name = "manual-generator" # default: "<project>-<service>"
  image          = "manual-generator:${var.image_tag}"

  build { # optional: build the image before deploying
    context    = "."
    dockerfile = "Dockerfile"
    args       = { VERSION = var.image_tag }
    before     = ["make", "bin/server"] # optional: a local command run first (e.g. compile)
  }

  command = ["./startup.sh"]
  env = {
    PORT          = "5000"
    DATABASE_PATH = "${local.db_dir}/manual_generator.db"
  }

  port {
    container = 5000
    host      = 8080 # where users reach the live release
    candidate = 8081 # where the candidate (green) is checked; bound to 127.0.0.1
  }

  volume "manual_instance" { target = "/app/instance" }
  volume "manual_logs" { target = "/app/logs" }
  volume "manual_uploads" { target = "/app/uploads" }

  health_check {
    path     = "/health"
    status   = [200] # default: any 2xx
    interval = "1s"
    timeout  = "2s"
    healthy  = 2     # consecutive passes needed
    deadline = "60s" # the candidate fails if not healthy by then
  }

  canary "manuals" { # extra checks on the candidate before cutover
    path          = "/manuals"
    status        = [200]
    body_contains = "count"
  }

  sqlite "main" {
    volume        = "manual_instance"
    path          = "manual_generator.db" # relative to the volume
    quick_check   = true                  # PRAGMA quick_check before cutover and on every backup
    seed_if_empty = ["./seed.sh"]         # run in a one-off container of the new image when the DB is empty
  }

  backup {
    store       = backup_store.s3
    volumes     = ["manual_instance", "manual_uploads"]
    consistency = "pause" # pause the live container while its files are copied; or "none"
    keep        = 14      # backups kept per service; older ones are deleted
    logs        = true    # upload the live container's logs before it stops

    # The database (sqlite "main") is always snapshotted online, never paused; consistency covers
    # a volume's other files. Uploads are written whole, so they are read without a pause, and
    # manual_instance holds nothing but the database: no deploy pauses the live release at all.
    volume "manual_uploads" { consistency = "none" }
  }

  hook "before_cutover" { # one-off container of the new image, same volumes and env
    command = ["./migrate.sh"]
  }

  deploy {
    cutover       = "proxy" # "proxy": zero downtime; "restart": stop live, start new (the seed)
    drain         = "10s"   # in-flight requests may finish this long on the old release
    stop_timeout  = "10s"
    auto_rollback = true
    keep_releases = 5
  }
}

notify "slack" "ops" { # "slack" or "webhook"
  url = var.slack_webhook
  on  = ["started", "succeeded", "failed", "rolled_back"]
}
