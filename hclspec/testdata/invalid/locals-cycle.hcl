# want: 4:3 Cycle in locals | local.a -> local.b -> local.c -> local.a
project = "x"
locals {
  a = local.b
  b = "${local.c}-b"
  c = upper(local.a)
}
service "a" { image = "a" }
