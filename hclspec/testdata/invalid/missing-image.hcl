# want: 3:1 Missing image
project = "x"
service "web" {
  env = { A = "b" }
}
