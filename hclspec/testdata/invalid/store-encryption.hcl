# want: 13:17 Signing key not sensitive | declared sensitive = true
# want: 15:22 Invalid age recipient | age_recipients[1] "ssh-ed25519 AAAA"
# want: 17:11 Invalid sse | "AES128"
# want: 22:15 Server-side encryption on a local store | sse and kms_key_id are for S3
# want: 23:17 Signing key too short | at least 16
project = "x"
variable "short" {
  type      = string
  default   = "tooshort"
  sensitive = true
}
backup_store "main" {
  signing_key = "a-long-enough-key-but-in-clear"
  encryption {
    age_recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p", "ssh-ed25519 AAAA"]
  }
  sse   = "AES128"
  bucket = "bucket"
}
backup_store "local" {
  directory = "b"
  sse       = "AES256"
  signing_key = var.short
}
