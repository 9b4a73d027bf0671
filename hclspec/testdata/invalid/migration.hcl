# want: 12:15 Unknown sqlite block | "main"
# want: 26:3 Migration without a backup | b_data
project = "x"
service "a" {
  image = "a"
  volume "manual_instance" { target = "/app/instance" }
  sqlite "main" {
    volume = "manual_instance"
    path   = "app.db"
  }
  migration {
    sqlite  = "mian"
    command = ["./migrate.sh"]
  }
  backup {
    volumes = ["manual_instance"]
  }
}
service "b" {
  image = "b"
  volume "b_data" { target = "/data" }
  sqlite "main" {
    volume = "b_data"
    path   = "app.db"
  }
  migration {
    command = ["./migrate.sh"]
  }
}
