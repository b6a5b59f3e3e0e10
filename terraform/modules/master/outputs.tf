output "api_url" {
  description = "URL of the Titus API (through the load balancer); the agents and the CLI use it."
  value       = try(local.api_url, null)
}

output "api_lb_dns_name" {
  description = "DNS name of the API load balancer."
  value       = try(aws_lb.this.dns_name, null)
}

output "autoscaling_group_name" {
  description = "Name of the masters' autoscaling group."
  value       = try(aws_autoscaling_group.this.name, null)
}

output "security_group_id" {
  description = "Security group of the masters (ZooKeeper, Cassandra and Mesos allow their clients from it)."
  value       = try(aws_security_group.this.id, null)
}

output "lb_security_group_id" {
  description = "Security group of the API load balancer."
  value       = try(aws_security_group.lb.id, null)
}

output "iam_role_arn" {
  description = "IAM role of the masters."
  value       = try(aws_iam_role.this.arn, null)
}

output "api_token_parameter_name" {
  description = "SSM parameter holding the API token (read it with aws ssm get-parameter --with-decryption)."
  value       = try(local.api_token_parameter_name, null)
}

output "agent_token_parameter_name" {
  description = "SSM parameter holding the agent token."
  value       = try(local.agent_token_parameter_name, null)
}
