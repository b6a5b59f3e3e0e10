variable "cluster_name" {
  description = "Name of the Titus cluster; value of the titus:cluster tag the capacity controller finds this group by."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "tier" {
  description = "Agent tier: critical (always-on services) or flex (batch and elastic work); value of the titus:tier tag."
  type        = string

  validation {
    condition     = contains(["critical", "flex"], var.tier)
    error_message = "tier must be \"critical\" or \"flex\"."
  }
}

variable "vpc_id" {
  description = "VPC the agents run in."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC; agents may send anything inside it (master API, DNS, task-to-task traffic)."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr_block, 0))
    error_message = "vpc_cidr_block must be a valid IPv4 CIDR."
  }
}

variable "subnet_ids" {
  description = "Private subnets, one per availability zone, the group launches agents into."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "ami_id" {
  description = "AMI the agents boot (Debian 12 or Amazon Linux 2023 with cloud-init)."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_types" {
  description = "EC2 instance types for the agents; the first is the launch template default, more than one enables a mixed-instances policy."
  type        = list(string)
  default     = ["m5.xlarge"]

  validation {
    condition     = length(var.instance_types) > 0 && alltrue([for t in var.instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "instance_types must list at least one EC2 instance type such as m5.xlarge."
  }
}

variable "on_demand_base_capacity" {
  description = "On-demand instances always kept before spot is used (mixed-instances policy only)."
  type        = number
  default     = 0

  validation {
    condition     = var.on_demand_base_capacity >= 0 && floor(var.on_demand_base_capacity) == var.on_demand_base_capacity
    error_message = "on_demand_base_capacity must be a whole number >= 0."
  }
}

variable "on_demand_percentage_above_base_capacity" {
  description = "Percent of capacity above the base that is on-demand; below 100 the rest is spot (a fit for the flex tier)."
  type        = number
  default     = 100

  validation {
    condition     = var.on_demand_percentage_above_base_capacity >= 0 && var.on_demand_percentage_above_base_capacity <= 100
    error_message = "on_demand_percentage_above_base_capacity must be between 0 and 100."
  }
}

variable "min_size" {
  description = "Fewest agents the capacity controller may scale this tier down to."
  type        = number
  default     = 1

  validation {
    condition     = var.min_size >= 0 && floor(var.min_size) == var.min_size
    error_message = "min_size must be a whole number >= 0."
  }
}

variable "max_size" {
  description = "Most agents the capacity controller may scale this tier up to."
  type        = number
  default     = 10

  validation {
    condition     = var.max_size >= 1 && var.max_size <= 1000 && floor(var.max_size) == var.max_size && var.max_size >= var.min_size
    error_message = "max_size must be a whole number from 1 to 1000 and at least min_size."
  }
}

variable "desired_capacity" {
  description = "Agents to start with; applied only when the group is created, afterwards the capacity controller owns it."
  type        = number
  default     = 1

  validation {
    condition     = var.desired_capacity >= var.min_size && var.desired_capacity <= var.max_size
    error_message = "desired_capacity must lie between min_size and max_size."
  }
}

variable "root_volume_size" {
  description = "Size in GiB of the encrypted root volume."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 1024
    error_message = "root_volume_size must be between 8 and 1024 GiB."
  }
}

variable "root_device_name" {
  description = "Root device name of the AMI (/dev/xvda for Debian and Amazon Linux)."
  type        = string
  default     = "/dev/xvda"
}

variable "docker_volume_size" {
  description = "Size in GiB of the encrypted volume for container images and writable layers."
  type        = number
  default     = 100

  validation {
    condition     = var.docker_volume_size >= 20 && var.docker_volume_size <= 16384
    error_message = "docker_volume_size must be between 20 and 16384 GiB."
  }
}

variable "kms_key_arn" {
  description = "ARN of the cluster KMS key: encrypts the EBS volumes and the agent token parameter."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "master_url" {
  description = "URL the agents long-poll the master API at, e.g. http://internal-lb:7001."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.master_url))
    error_message = "master_url must start with http:// or https://."
  }
}

variable "agent_token_parameter_name" {
  description = "Name of the SSM SecureString parameter holding the agent token (read at boot through the instance role)."
  type        = string

  validation {
    condition     = can(regex("^/[A-Za-z0-9_.\\-/]+$", var.agent_token_parameter_name))
    error_message = "agent_token_parameter_name must be an SSM parameter path starting with /."
  }
}

variable "ssh_ingress_cidr_blocks" {
  description = "CIDRs (a bastion's) allowed to SSH to the agents; empty means no inbound traffic at all. 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_ingress_cidr_blocks : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "ssh_ingress_cidr_blocks must be valid IPv4 CIDRs of a bastion; 0.0.0.0/0 is not allowed."
  }
}

variable "mesos_master_security_group_ids" {
  description = "Security groups of the Mesos masters keyed by a static name, allowed to reach the Mesos agent port 5051; empty when Mesos is not used."
  type        = map(string)
  default     = {}
}

variable "mesos_zk_url" {
  description = "zk:// URL of the Mesos masters, handed to the agent when Mesos is used; empty otherwise."
  type        = string
  default     = ""
}

variable "enable_ecr_pull" {
  description = "Grant the agents read access to the ECR repositories in ecr_repository_arns so tasks can use private images."
  type        = bool
  default     = false
}

variable "ecr_repository_arns" {
  description = "ECR repositories agents may pull from when enable_ecr_pull is true."
  type        = list(string)
  default     = []
}

variable "key_name" {
  description = "EC2 key pair for SSH through the bastion; null for none (use SSM Session Manager or a baked key)."
  type        = string
  default     = null
}

variable "ansible_repo_url" {
  description = "HTTPS git URL holding ansible/site.yml, pulled at boot."
  type        = string
}

variable "ansible_version" {
  description = "Branch, tag or commit of the Ansible repository to apply."
  type        = string
}

variable "bootstrap_command" {
  description = "Packaged bootstrap command baked into the AMI, run instead of ansible-pull; empty to use ansible-pull."
  type        = string
  default     = ""
}

variable "autoscaling_group_tags" {
  description = "Extra tags for the autoscaling group and its instances."
  type        = map(string)
  default     = {}
}

variable "task_log_bucket" {
  description = "Where finished tasks' logs go (modules/log_bucket's outputs): the agents may put them there. null: no archive, a task's logs go with its agent."
  type = object({
    name   = string
    arn    = string
    prefix = string
  })
  default = null
}

variable "tags" {
  description = "Tags added to every resource (the titus:cluster tag is always added)."
  type        = map(string)
  default     = {}
}
