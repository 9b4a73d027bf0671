# want: 3:23 Call to unknown function | Did you mean "upper"?
project = "x"
service "a" { image = uppr("a") }
