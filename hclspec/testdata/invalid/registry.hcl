# want: 5:1 Invalid registry host | a host name with a dot or a port
# want: 7:14 Registry password not sensitive | declared sensitive = true
# want: 11:14 Registry password not sensitive | declared sensitive = true
project = "x"
registry "my registry" {
  username = "u"
  password = "p"
}
registry "ghcr.io" {
  username = "u"
  password = "in-clear"
}
