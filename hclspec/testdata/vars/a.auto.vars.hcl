tag = "from-auto"
