# want: 3:25 Unknown reference | Did you mean "var"?
project = "x"
service "web" { image = vars.tag }
