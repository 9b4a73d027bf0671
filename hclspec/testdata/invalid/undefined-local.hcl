# want: 4:25 Reference to undeclared local value
project = "x"
locals { dir = "/data" }
service "web" { image = local.image }
