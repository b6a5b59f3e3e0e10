output "zk_url" {
  description = "zk:// URL Mesos agents and frameworks find the leading Mesos master by (null when not created)."
  value       = var.create ? local.zk_url : null
}

output "autoscaling_group_name" {
  description = "Name of the Mesos masters' autoscaling group."
  value       = try(aws_autoscaling_group.this[0].name, null)
}

output "security_group_id" {
  description = "Security group of the Mesos masters."
  value       = try(aws_security_group.this[0].id, null)
}
