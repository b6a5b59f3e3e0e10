output "autoscaling_group_name" {
  description = "Name of the tier's autoscaling group (what the capacity controller resizes)."
  value       = try(aws_autoscaling_group.this.name, null)
}

output "autoscaling_group_arn" {
  description = "ARN of the tier's autoscaling group."
  value       = try(aws_autoscaling_group.this.arn, null)
}

output "launch_template_id" {
  description = "ID of the agents' launch template."
  value       = try(aws_launch_template.this.id, null)
}

output "security_group_id" {
  description = "Security group of the tier's agents (the master allows the API from it)."
  value       = try(aws_security_group.this.id, null)
}

output "iam_role_arn" {
  description = "IAM role of the tier's agents."
  value       = try(aws_iam_role.this.arn, null)
}

output "tier" {
  description = "The tier this group serves."
  value       = var.tier
}
