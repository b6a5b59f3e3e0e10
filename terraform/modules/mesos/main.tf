data "aws_region" "current" {}

locals {
  tags = merge(var.tags, { "titus:cluster" = var.cluster_name })

  name   = "${var.cluster_name}-mesos"
  create = var.create

  instance_tags = merge(local.tags, {
    Name         = local.name
    "titus:role" = "mesos"
  })

  zk_url = "zk://${var.zookeeper_connect_string}/mesos"
}

module "bootstrap" {
  source = "../bootstrap"

  cluster_name      = var.cluster_name
  role              = "mesos"
  region            = data.aws_region.current.name
  ansible_repo_url  = var.ansible_repo_url
  ansible_version   = var.ansible_version
  bootstrap_command = var.bootstrap_command
  facts = {
    titus_mesos_zk     = local.zk_url
    titus_mesos_quorum = tostring(floor(var.master_count / 2) + 1)
  }
}

################################################################################
# Security group: 5050 from the Titus masters, the agents and the other Mesos masters
################################################################################

resource "aws_security_group" "this" {
  count = local.create ? 1 : 0

  name_prefix = "${local.name}-"
  description = "Mesos masters of ${var.cluster_name}"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = local.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "client" {
  for_each = local.create ? var.client_security_group_ids : {}

  security_group_id            = aws_security_group.this[0].id
  description                  = "Mesos master API from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 5050
  to_port                      = 5050
  referenced_security_group_id = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "peer" {
  count = local.create ? 1 : 0

  security_group_id            = aws_security_group.this[0].id
  description                  = "Mesos master replicated log between masters"
  ip_protocol                  = "tcp"
  from_port                    = 5050
  to_port                      = 5050
  referenced_security_group_id = aws_security_group.this[0].id

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = local.create ? toset(var.ssh_ingress_cidr_blocks) : toset([])

  security_group_id = aws_security_group.this[0].id
  description       = "SSH from the bastion"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  count = local.create ? 1 : 0

  security_group_id = aws_security_group.this[0].id
  description       = "HTTPS out: packages and the Ansible repository"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "http" {
  count = local.create ? 1 : 0

  security_group_id = aws_security_group.this[0].id
  description       = "HTTP out: OS package mirrors"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  count = local.create ? 1 : 0

  security_group_id = aws_security_group.this[0].id
  description       = "Inside the VPC: ZooKeeper, agents on 5051, frameworks, DNS"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr_block

  tags = local.tags
}

################################################################################
# IAM: no AWS permissions are needed
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
  count = local.create ? 1 : 0

  name_prefix        = "${local.name}-"
  description        = "Mesos masters of ${var.cluster_name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = local.tags
}

resource "aws_iam_instance_profile" "this" {
  count = local.create ? 1 : 0

  name_prefix = "${local.name}-"
  role        = aws_iam_role.this[0].name

  tags = local.tags
}

################################################################################
# Launch template and autoscaling group (masters find each other through ZooKeeper)
################################################################################

resource "aws_launch_template" "this" {
  count = local.create ? 1 : 0

  name_prefix            = "${local.name}-"
  description            = "Mesos master"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  key_name               = var.key_name
  update_default_version = true
  user_data              = module.bootstrap.user_data_base64
  ebs_optimized          = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.this[0].arn
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.this[0].id]
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
    resource_type = "instance"
    tags          = local.instance_tags
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.instance_tags
  }

  tags = local.instance_tags
}

resource "aws_autoscaling_group" "this" {
  count = local.create ? 1 : 0

  name                      = local.name
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.master_count
  max_size                  = var.master_count
  desired_capacity          = var.master_count
  health_check_type         = "EC2"
  health_check_grace_period = 300

  launch_template {
    id      = aws_launch_template.this[0].id
    version = aws_launch_template.this[0].latest_version
  }

  dynamic "tag" {
    for_each = local.instance_tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
