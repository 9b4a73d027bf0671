# want: 4:1 Invalid store name | backup_store "my store"
# want: 7:1 Unknown store kind | set bucket (an S3 store) or directory
project = "x"
backup_store "my store" {
  directory = "b"
}
backup_store "nothing" {
  prefix = "p/"
}
