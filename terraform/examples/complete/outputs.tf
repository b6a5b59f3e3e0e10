output "cluster_name" {
  description = "Name of the cluster (value of the titus:cluster tag)."
  value       = var.cluster_name
}

output "region" {
  description = "Region the cluster runs in."
  value       = var.region
}

output "api_url" {
  description = "Titus API URL; point the CLI at it (TITUS_API_URL)."
  value       = module.master.api_url
}

output "api_token_parameter_name" {
  description = "SSM parameter with the API token: aws ssm get-parameter --with-decryption --name <this>."
  value       = module.master.api_token_parameter_name
}

output "agent_token_parameter_name" {
  description = "SSM parameter with the agent token."
  value       = module.master.agent_token_parameter_name
}

output "master_autoscaling_group_name" {
  description = "Autoscaling group of the Titus masters."
  value       = module.master.autoscaling_group_name
}

output "agent_autoscaling_group_names" {
  description = "Agent autoscaling groups by tier (what the capacity controller resizes)."
  value       = { for tier, m in module.agent_tier : tier => m.autoscaling_group_name }
}

output "zookeeper_connect_string" {
  description = "ZooKeeper host:port list."
  value       = module.zookeeper.connect_string
}

output "cassandra_hosts" {
  description = "Cassandra contact points."
  value       = module.cassandra.hosts
}

output "mesos_zk_url" {
  description = "zk:// URL of the Mesos masters (null without Mesos)."
  value       = module.mesos.zk_url
}

output "mesos_autoscaling_group_name" {
  description = "Autoscaling group of the Mesos masters (null without Mesos)."
  value       = module.mesos.autoscaling_group_name
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = module.network.vpc_id
}

output "private_subnet_ids" {
  description = "Private subnets of the cluster."
  value       = module.network.private_subnet_ids
}

output "kms_key_arn" {
  description = "KMS key encrypting the cluster's volumes, tokens and logs."
  value       = aws_kms_key.this.arn
}

output "log_bucket_name" {
  description = "S3 bucket of finished tasks' logs (empty when create_log_bucket is false)."
  value       = var.create_log_bucket ? module.log_bucket[0].bucket_name : ""
}
