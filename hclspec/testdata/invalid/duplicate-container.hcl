# want: 5:20 Duplicate container name
project = "x"
service "a" { image = "a" }
service "b" {
  container_name = "x-a"
  image          = "b"
}
