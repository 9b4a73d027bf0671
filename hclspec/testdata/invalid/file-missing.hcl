# want: 3:23 Error in function call | no-such-file.txt
project = "x"
service "a" { image = file("no-such-file.txt") }
