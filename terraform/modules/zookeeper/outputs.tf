output "connect_string" {
  description = "host:port list for ZooKeeper clients (TITUS_ZK on the masters)."
  value       = try(join(",", [for ip in local.addresses : "${ip}:2181"]), null)
}

output "private_ips" {
  description = "Private IPs of the members, in myid order."
  value       = try(local.addresses, null)
}

output "instance_ids" {
  description = "EC2 instance IDs of the members."
  value       = try(aws_instance.this[*].id, null)
}

output "security_group_id" {
  description = "Security group of the ensemble."
  value       = try(aws_security_group.this.id, null)
}
