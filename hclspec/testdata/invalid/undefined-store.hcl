# want: 8:15 Reference to undeclared backup store | Did you mean "s3"?
project = "x"
backup_store "s3" { bucket = "bkt" }
service "web" {
  image = "nginx"
  volume "data" { target = "/data" }
  backup {
    store   = backup_store.s4
    volumes = ["data"]
  }
}
