# want: 4:1 Duplicate service
project = "x"
service "web" { image = "a" }
service "web" { image = "b" }
