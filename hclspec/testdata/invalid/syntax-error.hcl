# want: 4:11 Invalid expression
project = "x"
service "web" {
  image = 
}
