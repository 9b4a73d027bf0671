# want: 7:19 Unknown volume | "data"
project = "x"
service "a" {
  image = "a"
  volume "data" { target = "/data" }
  sqlite "main" {
    volume      = "dta"
    path        = "app.db"
  }
}
