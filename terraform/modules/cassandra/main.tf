data "aws_region" "current" {}

locals {
  tags = merge(var.tags, { "titus:cluster" = var.cluster_name })

  name = "${var.cluster_name}-cassandra"

  instance_tags = merge(local.tags, { "titus:role" = "cassandra" })

  # Each node owns a network interface created first, so the seed list is known before any instance
  # boots; a replaced node comes back on the same address and rejoins the ring as itself.
  addresses = aws_network_interface.this[*].private_ip
  seeds     = slice(local.addresses, 0, min(var.seed_count, var.node_count))
}

################################################################################
# Security group: CQL from the masters on 9042, gossip among nodes on 7000
################################################################################

resource "aws_security_group" "this" {
  name_prefix = "${local.name}-"
  description = "Cassandra ring of ${var.cluster_name}"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = local.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "client" {
  for_each = var.client_security_group_ids

  security_group_id            = aws_security_group.this.id
  description                  = "CQL clients (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = 9042
  to_port                      = 9042
  referenced_security_group_id = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "peer" {
  for_each = { gossip = 7000 }

  security_group_id            = aws_security_group.this.id
  description                  = "Cassandra ${each.key} port between nodes"
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
  description       = "Inside the VPC: other nodes, DNS"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr_block

  tags = local.tags
}

################################################################################
# IAM: the nodes need no AWS API; the role exists so one can be granted (e.g. backups to S3) without replacing them
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
  description        = "Cassandra nodes of ${var.cluster_name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = local.tags
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${local.name}-"
  role        = aws_iam_role.this.name

  tags = local.tags
}

################################################################################
# Nodes
################################################################################

# The zone of each node's subnet: its data volume must be created there, and must not depend on the
# instance (a replaced instance would otherwise replace the volume, and the data with it).
data "aws_subnet" "node" {
  count = var.node_count

  id = var.subnet_ids[count.index % length(var.subnet_ids)]
}

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
  role              = "cassandra"
  region            = data.aws_region.current.name
  ansible_repo_url  = var.ansible_repo_url
  ansible_version   = var.ansible_version
  bootstrap_command = var.bootstrap_command
  facts = {
    titus_cassandra_cluster_name   = var.cluster_name
    titus_cassandra_seeds          = join(",", local.seeds)
    titus_cassandra_rack           = "rack${count.index % length(var.subnet_ids) + 1}"
    titus_cassandra_data_device    = "/dev/xvdf"
    titus_cassandra_data_volume_id = aws_ebs_volume.data[count.index].id
  }
}

resource "aws_launch_template" "this" {
  name_prefix            = "${local.name}-"
  description            = "Cassandra node"
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
    # A node is replaced on purpose (taint), never because a newer AMI was published.
    ignore_changes = [launch_template, user_data_base64]
  }
}

# Data outlives the instance: a replaced node reattaches its volume and keeps its tokens.
resource "aws_ebs_volume" "data" {
  count = var.node_count

  availability_zone = data.aws_subnet.node[count.index].availability_zone
  size              = var.data_volume_size
  type              = "gp3"
  iops              = var.data_volume_iops
  encrypted         = true
  kms_key_id        = var.kms_key_arn

  tags = merge(local.instance_tags, { Name = "${local.name}-${count.index + 1}-data" })
}

resource "aws_volume_attachment" "data" {
  count = var.node_count

  device_name = "/dev/xvdf"
  volume_id   = aws_ebs_volume.data[count.index].id
  instance_id = aws_instance.this[count.index].id
}
