data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  tags = merge(var.tags, { "titus:cluster" = var.cluster_name })

  # Empty facts when there is no log bucket: the Ansible roles then configure no archive.
  log_bucket_name = var.task_log_bucket == null ? "" : var.task_log_bucket.name
  log_prefix      = var.task_log_bucket == null ? "" : var.task_log_bucket.prefix

  # Named up front (not taken from the ASG) so the launch template can tell the agent its group
  # without a dependency cycle; the capacity controller reports per group by this name.
  asg_name = "${var.cluster_name}-agent-${var.tier}"

  asg_tags = merge(local.tags, var.autoscaling_group_tags, {
    Name         = local.asg_name
    "titus:tier" = var.tier
    "titus:role" = "agent"
  })

  use_mixed_instances = length(var.instance_types) > 1 || var.on_demand_percentage_above_base_capacity < 100

  ssm_parameter_arn = "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${var.agent_token_parameter_name}"
}

module "bootstrap" {
  source = "../bootstrap"

  cluster_name      = var.cluster_name
  role              = "agent"
  region            = data.aws_region.current.name
  ansible_repo_url  = var.ansible_repo_url
  ansible_version   = var.ansible_version
  bootstrap_command = var.bootstrap_command
  facts = {
    titus_master_url            = var.master_url
    titus_tier                  = var.tier
    titus_instance_group        = local.asg_name
    titus_agent_token_parameter = var.agent_token_parameter_name
    titus_docker_volume_device  = "/dev/xvdb"
    titus_mesos_master_zk       = var.mesos_zk_url
    titus_log_s3_bucket         = local.log_bucket_name
    titus_log_s3_prefix         = local.log_prefix
  }
}

################################################################################
# Security group: agents only dial out (they long-poll the master); nothing dials in but SSH from a
# bastion when one is configured, and the Mesos masters on 5051 when Mesos is in use.
################################################################################

resource "aws_security_group" "this" {
  name_prefix = "${local.asg_name}-"
  description = "Titus ${var.tier} agents of ${var.cluster_name}: no inbound except SSH from the bastion"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = local.asg_name })

  lifecycle {
    create_before_destroy = true
  }
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

resource "aws_vpc_security_group_ingress_rule" "mesos_agent" {
  for_each = var.mesos_master_security_group_ids

  security_group_id            = aws_security_group.this.id
  description                  = "Mesos agent API from the Mesos masters"
  ip_protocol                  = "tcp"
  from_port                    = 5051
  to_port                      = 5051
  referenced_security_group_id = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "HTTPS out: image registries, SSM, packages, the Ansible repository"
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
  description       = "Everything inside the VPC: the master API, DNS, task traffic between hosts"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr_block

  tags = local.tags
}

################################################################################
# IAM: read the agent token, nothing else (plus image pulls from ECR when asked)
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
  name_prefix        = "${local.asg_name}-"
  description        = "Titus ${var.tier} agents of ${var.cluster_name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = local.tags
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "ReadAgentToken"
    actions   = ["ssm:GetParameter"]
    resources = [local.ssm_parameter_arn]
  }

  statement {
    sid       = "DecryptAgentToken"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${data.aws_region.current.name}.amazonaws.com"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_ecr_pull ? [1] : []
    content {
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_ecr_pull ? [1] : []
    content {
      sid       = "EcrPull"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = var.ecr_repository_arns
    }
  }

  # A finished task's logs: put under the log prefix only (never read, listed or deleted), encrypted with
  # the cluster key only on S3's behalf.
  dynamic "statement" {
    for_each = var.task_log_bucket == null ? [] : [var.task_log_bucket]
    content {
      sid       = "WriteTaskLogs"
      actions   = ["s3:PutObject"]
      resources = ["${statement.value.arn}/${statement.value.prefix}/*"]
    }
  }

  dynamic "statement" {
    for_each = var.task_log_bucket == null ? [] : [var.task_log_bucket]
    content {
      sid       = "EncryptTaskLogs"
      actions   = ["kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "titus-agent"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${local.asg_name}-"
  role        = aws_iam_role.this.name

  tags = local.tags
}

################################################################################
# Launch template and autoscaling group
################################################################################

resource "aws_launch_template" "this" {
  name_prefix            = "${local.asg_name}-"
  description            = "Titus ${var.tier} agent"
  image_id               = var.ami_id
  instance_type          = var.instance_types[0]
  key_name               = var.key_name
  update_default_version = true
  user_data              = module.bootstrap.user_data_base64
  ebs_optimized          = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.this.id]
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

  # Container images and writable layers live on their own volume so a full disk cannot take the OS down.
  block_device_mappings {
    device_name = "/dev/xvdb"
    ebs {
      volume_size           = var.docker_volume_size
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = local.asg_tags
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.asg_tags
  }

  tags = local.asg_tags
}

resource "aws_autoscaling_group" "this" {
  name                      = local.asg_name
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_type         = "EC2"
  health_check_grace_period = 300
  default_cooldown          = 60
  # The capacity controller drains an agent before it terminates it, so scale-in is the controller's
  # decision alone, never the ASG's.
  protect_from_scale_in = true
  termination_policies  = ["OldestLaunchTemplate", "OldestInstance"]
  enabled_metrics       = ["GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances", "GroupTerminatingInstances"]

  dynamic "launch_template" {
    for_each = local.use_mixed_instances ? [] : [1]
    content {
      id      = aws_launch_template.this.id
      version = aws_launch_template.this.latest_version
    }
  }

  dynamic "mixed_instances_policy" {
    for_each = local.use_mixed_instances ? [1] : []
    content {
      instances_distribution {
        on_demand_base_capacity                  = var.on_demand_base_capacity
        on_demand_percentage_above_base_capacity = var.on_demand_percentage_above_base_capacity
        spot_allocation_strategy                 = "price-capacity-optimized"
      }
      launch_template {
        launch_template_specification {
          launch_template_id = aws_launch_template.this.id
          version            = aws_launch_template.this.latest_version
        }
        dynamic "override" {
          for_each = var.instance_types
          content {
            instance_type = override.value
          }
        }
      }
    }
  }

  dynamic "tag" {
    for_each = local.asg_tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # The capacity controller owns the group's size: an apply must never undo its decisions.
    ignore_changes = [desired_capacity]
  }
}
