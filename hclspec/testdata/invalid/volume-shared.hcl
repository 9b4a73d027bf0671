# want: 7:14 Incorrect attribute value type | a bool
project = "x"
service "web" {
  image = "a"
  volume "data" {
    target = "/a"
    shared = "perhaps"
  }
}
