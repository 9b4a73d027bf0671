# want: 5:13 Incorrect attribute value type | a list of strings
project = "x"
service "web" {
  image   = "nginx"
  command = "./run.sh"
}
