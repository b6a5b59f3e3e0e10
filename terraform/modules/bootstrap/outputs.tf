output "user_data" {
  description = "Rendered cloud-init shell script."
  value       = local.user_data
}

output "user_data_base64" {
  description = "Rendered user data, base64-encoded as launch templates expect it."
  value       = base64encode(local.user_data)
}

output "facts" {
  description = "The facts written to /etc/titus/bootstrap.json on the instance."
  value       = local.facts
}
