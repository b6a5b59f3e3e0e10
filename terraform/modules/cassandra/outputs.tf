output "hosts" {
  description = "Private IPs of the nodes (TITUS_CASSANDRA_HOSTS on the masters)."
  value       = try(local.addresses, null)
}

output "seeds" {
  description = "Seed nodes of the ring."
  value       = try(local.seeds, null)
}

output "instance_ids" {
  description = "EC2 instance IDs of the nodes."
  value       = try(aws_instance.this[*].id, null)
}

output "security_group_id" {
  description = "Security group of the ring."
  value       = try(aws_security_group.this.id, null)
}
