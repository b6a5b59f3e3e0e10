data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  tags = merge(var.tags, { "titus:cluster" = var.cluster_name })

  # Empty facts when there is no log bucket: the Ansible roles then configure no archive.
  log_bucket_name = var.task_log_bucket == null ? "" : var.task_log_bucket.name
  log_prefix      = var.task_log_bucket == null ? "" : var.task_log_bucket.prefix

  name = "${var.cluster_name}-master"

  instance_tags = merge(local.tags, var.autoscaling_group_tags, {
    Name         = local.name
    "titus:role" = "master"
  })

  api_token_parameter_name   = var.create_tokens ? aws_ssm_parameter.api_token[0].name : var.api_token_parameter_name
  agent_token_parameter_name = var.create_tokens ? aws_ssm_parameter.agent_token[0].name : var.agent_token_parameter_name

  parameter_arn_prefix = "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter"

  api_tls    = var.api_certificate_arn != null
  api_scheme = local.api_tls ? "https" : "http"
  api_url    = "${local.api_scheme}://${aws_lb.this.dns_name}:${var.api_port}"
}

################################################################################
# Tokens: generated once into SSM SecureString parameters encrypted with the cluster key. The
# instances read them at boot through their role; they never appear in user data.
#
# No hashicorp/random: the value is two version-4 UUIDs (244 random bits from Go's crypto/rand, which
# Terraform's uuid() uses), fixed at creation by ignore_changes, so a plan never regenerates it.
################################################################################

resource "aws_ssm_parameter" "api_token" {
  count = var.create_tokens ? 1 : 0

  name        = "/titus/${var.cluster_name}/api-token"
  description = "Bearer token for the Titus API of ${var.cluster_name}"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = "${replace(uuid(), "-", "")}${replace(uuid(), "-", "")}"

  tags = local.tags

  lifecycle {
    ignore_changes = [value]
  }
}

resource "aws_ssm_parameter" "agent_token" {
  count = var.create_tokens ? 1 : 0

  name        = "/titus/${var.cluster_name}/agent-token"
  description = "Token the agents of ${var.cluster_name} present to the master"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = "${replace(uuid(), "-", "")}${replace(uuid(), "-", "")}"

  tags = local.tags

  lifecycle {
    ignore_changes = [value]
  }
}

module "bootstrap" {
  source = "../bootstrap"

  cluster_name      = var.cluster_name
  role              = "master"
  region            = data.aws_region.current.name
  ansible_repo_url  = var.ansible_repo_url
  ansible_version   = var.ansible_version
  bootstrap_command = var.bootstrap_command
  facts = {
    titus_api_port                    = tostring(var.api_port)
    titus_api_url                     = local.api_url
    titus_zk                          = var.zookeeper_connect_string
    titus_store                       = "cassandra"
    titus_cassandra_hosts             = join(",", var.cassandra_hosts)
    titus_api_token_parameter         = local.api_token_parameter_name
    titus_agent_token_parameter       = local.agent_token_parameter_name
    titus_capacity_controller_enabled = tostring(var.enable_capacity_controller)
    titus_log_s3_bucket               = local.log_bucket_name
    titus_log_s3_prefix               = local.log_prefix
    # The bucket's own lifecycle rule (modules/log_bucket) keeps the retention: the masters leave it alone.
    titus_log_retention_days = "0"
  }
}

################################################################################
# Load balancer for the API: agents, the CLI and the capacity controller reach the masters through it
################################################################################

resource "aws_security_group" "lb" {
  name_prefix = "${local.name}-api-lb-"
  description = "Titus API load balancer of ${var.cluster_name}"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = "${local.name}-api-lb" })

  lifecycle {
    create_before_destroy = true
  }
}

# The only ingress that may come from anywhere: the API port, and only when the user lists 0.0.0.0/0
# in api_ingress_cidr_blocks (default: none).
resource "aws_vpc_security_group_ingress_rule" "lb_api_cidr" {
  for_each = toset(var.api_ingress_cidr_blocks)

  security_group_id = aws_security_group.lb.id
  description       = "Titus API from an allowed CIDR"
  ip_protocol       = "tcp"
  from_port         = var.api_port
  to_port           = var.api_port
  cidr_ipv4         = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_api_clients" {
  for_each = var.api_client_security_group_ids

  security_group_id            = aws_security_group.lb.id
  description                  = "Titus API from agents and other cluster clients"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = each.value

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_api_masters" {
  security_group_id            = aws_security_group.lb.id
  description                  = "Titus API from the masters (capacity controller, follower forwarding)"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.this.id

  tags = local.tags
}

resource "aws_vpc_security_group_egress_rule" "lb_to_masters" {
  security_group_id            = aws_security_group.lb.id
  description                  = "Forward API traffic and health checks to the masters"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.this.id

  tags = local.tags
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:Access logs of a network load balancer cover only TLS listeners; the masters' request log is the API audit trail.
  #checkov:skip=CKV_AWS_150:The load balancer holds no state and deletion protection would make `titus cluster destroy` fail half-way.
  name                             = substr("${var.cluster_name}-api", 0, 32)
  load_balancer_type               = "network"
  internal                         = !var.api_internet_facing
  subnets                          = var.api_internet_facing ? var.public_subnet_ids : var.subnet_ids
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = false

  tags = merge(local.tags, { Name = "${local.name}-api" })
}

resource "aws_lb_target_group" "this" {
  name_prefix          = "titus-"
  port                 = var.api_port
  protocol             = "TCP"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  # Every master serves the API: the leader itself, standbys by forwarding to the leader they name.
  # /healthz says so (200 with role leader or standby) and answers 503 once a master is deposed or
  # fenced, so an HTTP check takes exactly the masters that cannot serve out of rotation; a TCP check
  # would keep them in as long as the port is open.
  health_check {
    enabled             = true
    protocol            = "HTTP"
    path                = "/healthz"
    matcher             = "200"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = merge(local.tags, { Name = "${local.name}-api" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "this" {
  load_balancer_arn = aws_lb.this.arn
  port              = var.api_port
  protocol          = local.api_tls ? "TLS" : "TCP"
  certificate_arn   = var.api_certificate_arn
  ssl_policy        = local.api_tls ? "ELBSecurityPolicy-TLS13-1-2-2021-06" : null

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = local.tags
}

################################################################################
# Masters' security group
################################################################################

resource "aws_security_group" "this" {
  name_prefix = "${local.name}-"
  description = "Titus masters of ${var.cluster_name}: API from the load balancer and each other"
  vpc_id      = var.vpc_id

  tags = merge(local.tags, { Name = local.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "api_from_lb" {
  security_group_id            = aws_security_group.this.id
  description                  = "Titus API and health checks from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
  referenced_security_group_id = aws_security_group.lb.id

  tags = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "api_from_masters" {
  security_group_id            = aws_security_group.this.id
  description                  = "Titus API between masters (followers forward to the leader)"
  ip_protocol                  = "tcp"
  from_port                    = var.api_port
  to_port                      = var.api_port
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
  description       = "HTTPS out: AWS APIs (SSM, Auto Scaling, EC2), packages, the Ansible repository"
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
  description       = "Inside the VPC: ZooKeeper, Cassandra, Mesos, other masters, DNS"
  ip_protocol       = "-1"
  cidr_ipv4         = var.vpc_cidr_block

  tags = local.tags
}

################################################################################
# IAM: read both tokens; resize and terminate only this cluster's agent groups
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
  description        = "Titus masters and capacity controller of ${var.cluster_name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json

  tags = local.tags
}

data "aws_iam_policy_document" "this" {
  statement {
    sid     = "ReadTokens"
    actions = ["ssm:GetParameter"]
    resources = [
      "${local.parameter_arn_prefix}${local.api_token_parameter_name}",
      "${local.parameter_arn_prefix}${local.agent_token_parameter_name}",
    ]
  }

  statement {
    sid       = "DecryptTokens"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${data.aws_region.current.name}.amazonaws.com"]
    }
  }

  # Describe calls cannot be scoped to resources; they reveal sizes, instance IDs and launch template
  # data, nothing else. Exactly the calls of capacity/aws.py (tests/terraform/test_aws_bringup.py runs
  # them with moto's IAM enforcement on): groups, the launch template's instance type and disk, the type's
  # CPU and memory.
  statement {
    sid = "DiscoverAgentGroups"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:DescribeInstanceTypes",
    ]
    resources = ["*"]
  }

  # Only the agent groups of this cluster: the tags are the ones the capacity controller discovers them by.
  statement {
    sid = "ResizeAgentGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["arn:${data.aws_partition.current.partition}:autoscaling:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.cluster_name}-agent-*"]
    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/titus:cluster"
      values   = [var.cluster_name]
    }
    condition {
      test     = "StringEquals"
      variable = "autoscaling:ResourceTag/titus:role"
      values   = ["agent"]
    }
  }

  # Finished tasks' logs, read back once their agent is gone: only under the log prefix (HeadObject is
  # authorised as GetObject), decrypted with the cluster key only on S3's behalf.
  dynamic "statement" {
    for_each = var.task_log_bucket == null ? [] : [var.task_log_bucket]
    content {
      sid       = "ReadTaskLogs"
      actions   = ["s3:GetObject"]
      resources = ["${statement.value.arn}/${statement.value.prefix}/*"]
    }
  }

  dynamic "statement" {
    for_each = var.task_log_bucket == null ? [] : [var.task_log_bucket]
    content {
      sid       = "DecryptTaskLogs"
      actions   = ["kms:Decrypt"]
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
  name   = "titus-master"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_iam_instance_profile" "this" {
  name_prefix = "${local.name}-"
  role        = aws_iam_role.this.name

  tags = local.tags
}

################################################################################
# Launch template and autoscaling group of the masters (fixed size; ZooKeeper elects the leader)
################################################################################

resource "aws_launch_template" "this" {
  name_prefix            = "${local.name}-"
  description            = "Titus master"
  image_id               = var.ami_id
  instance_type          = var.instance_type
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
  name                      = local.name
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = var.master_count
  max_size                  = var.master_count
  desired_capacity          = var.master_count
  target_group_arns         = [aws_lb_target_group.this.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 300
  enabled_metrics           = ["GroupDesiredCapacity", "GroupInServiceInstances"]

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # Replace one master at a time so a quorum of masters keeps serving during a template change.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 66
    }
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
