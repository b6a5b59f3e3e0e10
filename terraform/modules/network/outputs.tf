output "vpc_id" {
  description = "ID of the VPC the cluster runs in."
  value       = try(local.vpc_id, null)
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR of the VPC; security groups allow cluster-internal egress to it."
  value       = try(local.vpc_cidr_block, null)
}

output "private_subnet_ids" {
  description = "Private subnets (one per AZ) for every instance of the cluster."
  value       = try(local.private_subnet_ids, null)
}

output "public_subnet_ids" {
  description = "Public subnets (one per AZ) for NAT gateways and an internet-facing API load balancer."
  value       = try(local.public_subnet_ids, null)
}

output "nat_public_ips" {
  description = "Public IPs the cluster's outbound traffic leaves from (allow these in registries' firewalls)."
  value       = try(aws_eip.nat[*].public_ip, null)
}
