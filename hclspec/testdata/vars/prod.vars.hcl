tag      = "from-var-file"
replicas = 3
