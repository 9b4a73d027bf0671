# want: 2:11 Invalid project name
project = "My Project"
service "a" { image = "a" }
