# want: 6:18 Invalid dockerfile
project = "x"
service "a" {
  image = "a"
  build {
    dockerfile = "../Dockerfile"
  }
}
