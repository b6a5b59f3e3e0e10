data "aws_region" "current" {}

locals {
  tags = merge(var.tags, { "titus:cluster" = var.cluster_name })

  name = "${var.cluster_name}-zookeeper"

  instance_tags = merge(local.tags, { "titus:role" = "zookeeper" })

  # Each member owns a network interface created first, so every member's address is known before any
  # instance boots and the ensemble list can be handed to all of them (and to the masters) up front.
  addresses = aws_network_interface.this[*].private_ip
  servers   = join(",", [for i, ip in local.addresses : "server.${i + 1}=${ip}:2888:3888"])
}

################################################################################
# Security group: clients on 2181, members among themselves on 2181/2888/3888
################################################################################

resource "aws_security_group" "this" {
  name_prefix = "${local.name}-"
  description = "ZooKeeper ensemble of ${var.cluster_name}"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = local.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "client" {
  for_each = var.client_security_group_ids

  security_group_id            = aws_security_group.this.id
  description                  = "ZooKeeper clients (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = 2181
  to_port                      = 2181
  referenced_security_group_id = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "peer" {
  for_each = { client = 2181, quorum = 2888, election = 3888 }

  security_group_id            = aws_security_group.this.id
  description                  = "ZooKeeper ${each.key} port between members"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.this.id

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.ssh_ingress_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "SSH from the bastion"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "HTTPS out: packages and the Ansible repository"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "http" {
  security_group_id = aws_security_group.this.id
  description       = "HTTP out: OS package mirrors"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  security_group_id = aws_security_group.this.id
  description       = "Inside the VPC: other members, DNS"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr_block

  tags = local.tags
}

################################################################################
# IAM: the members need no AWS API; the role exists for SSM Session Manager when asked
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name_prefix        = "${local.name}-"
  description        = "ZooKeeper members of ${var.cluster_name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = local.tags
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${local.name}-"
  role        = aws_iam_role.this.name

  tags = local.tags
}

################################################################################
# Members
################################################################################

resource "aws_network_interface" "this" {
  count = var.node_count

  subnet_id       = var.subnet_ids[count.index % length(var.subnet_ids)]
  security_groups = [aws_security_group.this.id]
  description     = "${local.name}-${count.index + 1}"

  tags = merge(local.instance_tags, { Name = "${local.name}-${count.index + 1}" })
}

module "bootstrap" {
  source = "../bootstrap"
  count  = var.node_count

  cluster_name      = var.cluster_name
  role              = "zookeeper"
  region            = data.aws_region.current.name
  ansible_repo_url  = var.ansible_repo_url
  ansible_version   = var.ansible_version
  bootstrap_command = var.bootstrap_command
  facts = {
    titus_zookeeper_myid    = tostring(count.index + 1)
    titus_zookeeper_servers = local.servers
  }
}

resource "aws_launch_template" "this" {
  name_prefix            = "${local.name}-"
  description            = "ZooKeeper member"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  key_name               = var.key_name
  update_default_version = true
  ebs_optimized          = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = var.root_device_name
    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.instance_tags
  }

  tags = local.instance_tags
}

resource "aws_instance" "this" {
  #checkov:skip=CKV_AWS_126:Detailed monitoring is enabled by the launch template; setting it here too makes the provider call MonitorInstances after launch for nothing.
  count = var.node_count

  user_data_base64     = module.bootstrap[count.index].user_data_base64
  iam_instance_profile = aws_iam_instance_profile.this.name
  ebs_optimized        = true

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  network_interface {
    network_interface_id = aws_network_interface.this[count.index].id
    device_index         = 0
  }

  # Repeated from the launch template so that the instance itself states it (and scanners can see it).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_size = var.root_volume_size
    volume_type = "gp3"
    encrypted   = true
    kms_key_id  = var.kms_key_arn
  }

  tags = merge(local.instance_tags, { Name = "${local.name}-${count.index + 1}" })

  lifecycle {
    # A member is replaced on purpose (taint), never because a newer AMI was published.
    ignore_changes = [launch_template, user_data_base64]
  }
}
