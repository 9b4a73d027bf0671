# want: 4:1 Unknown notify event | "succeeded"
project = "x"
service "a" { image = "a" }
notify "slack" "ops" {
  url = "https://example.invalid/hook"
  on  = ["succeded"]
}
