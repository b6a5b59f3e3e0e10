provider "aws" {
  region = var.region

  # Every resource the provider creates carries the cluster tag, on top of the tags each module sets.
  default_tags {
    tags = merge(var.tags, { "titus:cluster" = var.cluster_name })
  }
}

# Zones are named, not discovered, so the set cannot grow behind the cluster's back when AWS adds one.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = length(var.azs) > 0 ? var.azs : ["${var.region}a", "${var.region}b", "${var.region}c"]
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == 3
      error_message = "Exactly three available zones are needed; set azs to three zone names of the region."
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

# Debian 12 published by Debian's own AWS account, unless an AMI is given.
data "aws_ami" "debian" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

locals {
  tags   = merge(var.tags, { "titus:cluster" = var.cluster_name })
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.debian[0].id
  azs    = slice(data.aws_availability_zones.available.names, 0, 3)

  account_arn = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
  asg_role    = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"

  agent_security_group_ids = { for tier, m in module.agent_tier : "agent-${tier}" => m.security_group_id }

  # What masters and agents are told of the log bucket (null: none, logs go with their agent).
  task_log_bucket = var.create_log_bucket ? {
    name   = module.log_bucket[0].bucket_name
    arn    = module.log_bucket[0].bucket_arn
    prefix = module.log_bucket[0].prefix
  } : null
}

################################################################################
# One KMS key for the cluster: EBS volumes, token parameters, flow logs
################################################################################

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A key policy must name the key itself as "*"; administration stays with the account's own IAM policies.
  #checkov:skip=CKV_AWS_111:A key policy must name the key itself as "*"; the statement is limited to this account's principals.
  #checkov:skip=CKV_AWS_356:In a key policy "*" means this key only.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.account_arn]
    }
  }

  # Auto Scaling launches instances with volumes encrypted by this key on the cluster's behalf.
  statement {
    sid       = "AutoScalingUsesKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.asg_role]
    }
  }

  statement {
    sid       = "AutoScalingGrantsToEc2"
    actions   = ["kms:CreateGrant"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.asg_role]
    }
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }

  statement {
    sid       = "FlowLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/titus/${var.cluster_name}/*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "Titus cluster ${var.cluster_name}: volumes, tokens, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json

  tags = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/titus-${var.cluster_name}"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# The cluster
################################################################################

module "network" {
  source = "../../modules/network"

  cluster_name       = var.cluster_name
  create_vpc         = var.create_vpc
  vpc_cidr           = var.vpc_cidr
  azs                = var.create_vpc ? local.azs : []
  single_nat_gateway = var.single_nat_gateway
  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  public_subnet_ids  = var.public_subnet_ids
  kms_key_arn        = aws_kms_key.this.arn
  tags               = var.tags
}

# Finished tasks' logs outlive their agents here (agents put, masters read; README "Logs").
module "log_bucket" {
  source = "../../modules/log_bucket"
  count  = var.create_log_bucket ? 1 : 0

  cluster_name   = var.cluster_name
  kms_key_arn    = aws_kms_key.this.arn
  retention_days = var.log_retention_days
  force_destroy  = var.log_bucket_force_destroy
  tags           = var.tags
}

module "zookeeper" {
  source = "../../modules/zookeeper"

  cluster_name            = var.cluster_name
  vpc_id                  = module.network.vpc_id
  vpc_cidr_block          = module.network.vpc_cidr_block
  subnet_ids              = module.network.private_subnet_ids
  node_count              = var.zookeeper_node_count
  instance_type           = var.zookeeper_instance_type
  ami_id                  = local.ami_id
  kms_key_arn             = aws_kms_key.this.arn
  ssh_ingress_cidr_blocks = var.bastion_cidr_blocks
  key_name                = var.key_name
  ansible_repo_url        = var.ansible_repo_url
  ansible_version         = var.ansible_version
  bootstrap_command       = var.bootstrap_command
  tags                    = var.tags

  client_security_group_ids = merge(
    { master = module.master.security_group_id },
    var.create_mesos ? { mesos = module.mesos.security_group_id } : {},
  )
}

module "cassandra" {
  source = "../../modules/cassandra"

  cluster_name              = var.cluster_name
  vpc_id                    = module.network.vpc_id
  vpc_cidr_block            = module.network.vpc_cidr_block
  subnet_ids                = module.network.private_subnet_ids
  node_count                = var.cassandra_node_count
  instance_type             = var.cassandra_instance_type
  data_volume_size          = var.cassandra_data_volume_size
  ami_id                    = local.ami_id
  kms_key_arn               = aws_kms_key.this.arn
  client_security_group_ids = { master = module.master.security_group_id }
  ssh_ingress_cidr_blocks   = var.bastion_cidr_blocks
  key_name                  = var.key_name
  ansible_repo_url          = var.ansible_repo_url
  ansible_version           = var.ansible_version
  bootstrap_command         = var.bootstrap_command
  tags                      = var.tags
}

module "master" {
  source = "../../modules/master"

  cluster_name                  = var.cluster_name
  vpc_id                        = module.network.vpc_id
  vpc_cidr_block                = module.network.vpc_cidr_block
  subnet_ids                    = module.network.private_subnet_ids
  public_subnet_ids             = module.network.public_subnet_ids
  master_count                  = var.master_count
  instance_type                 = var.master_instance_type
  ami_id                        = local.ami_id
  kms_key_arn                   = aws_kms_key.this.arn
  api_port                      = var.api_port
  api_ingress_cidr_blocks       = var.api_ingress_cidr_blocks
  api_client_security_group_ids = local.agent_security_group_ids
  api_internet_facing           = var.api_internet_facing
  api_certificate_arn           = var.api_certificate_arn
  zookeeper_connect_string      = module.zookeeper.connect_string
  cassandra_hosts               = module.cassandra.hosts
  task_log_bucket               = local.task_log_bucket
  ssh_ingress_cidr_blocks       = var.bastion_cidr_blocks
  key_name                      = var.key_name
  ansible_repo_url              = var.ansible_repo_url
  ansible_version               = var.ansible_version
  bootstrap_command             = var.bootstrap_command
  tags                          = var.tags
}

# Both tiers come from the one agent_tier module; only their sizes and purchase options differ.
module "agent_tier" {
  source   = "../../modules/agent_tier"
  for_each = var.agent_tiers

  cluster_name                             = var.cluster_name
  tier                                     = each.key
  vpc_id                                   = module.network.vpc_id
  vpc_cidr_block                           = module.network.vpc_cidr_block
  subnet_ids                               = module.network.private_subnet_ids
  ami_id                                   = local.ami_id
  instance_types                           = each.value.instance_types
  min_size                                 = each.value.min_size
  max_size                                 = each.value.max_size
  desired_capacity                         = each.value.desired_capacity
  on_demand_percentage_above_base_capacity = each.value.on_demand_percentage_above_base_capacity
  docker_volume_size                       = each.value.docker_volume_size
  kms_key_arn                              = aws_kms_key.this.arn
  master_url                               = module.master.api_url
  agent_token_parameter_name               = module.master.agent_token_parameter_name
  task_log_bucket                          = local.task_log_bucket
  ssh_ingress_cidr_blocks                  = var.bastion_cidr_blocks
  mesos_master_security_group_ids          = var.create_mesos ? { mesos = module.mesos.security_group_id } : {}
  mesos_zk_url                             = var.create_mesos ? module.mesos.zk_url : ""
  enable_ecr_pull                          = length(var.ecr_repository_arns) > 0
  ecr_repository_arns                      = var.ecr_repository_arns
  key_name                                 = var.key_name
  ansible_repo_url                         = var.ansible_repo_url
  ansible_version                          = var.ansible_version
  bootstrap_command                        = var.bootstrap_command
  tags                                     = var.tags
}

module "mesos" {
  source = "../../modules/mesos"

  create                   = var.create_mesos
  cluster_name             = var.cluster_name
  vpc_id                   = module.network.vpc_id
  vpc_cidr_block           = module.network.vpc_cidr_block
  subnet_ids               = module.network.private_subnet_ids
  master_count             = var.mesos_master_count
  instance_type            = var.mesos_instance_type
  zookeeper_connect_string = module.zookeeper.connect_string
  ami_id                   = local.ami_id
  kms_key_arn              = aws_kms_key.this.arn
  ssh_ingress_cidr_blocks  = var.bastion_cidr_blocks
  key_name                 = var.key_name
  ansible_repo_url         = var.ansible_repo_url
  ansible_version          = var.ansible_version
  bootstrap_command        = var.bootstrap_command
  tags                     = var.tags

  client_security_group_ids = merge({ master = module.master.security_group_id }, local.agent_security_group_ids)
}
