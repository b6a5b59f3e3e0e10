variable "cluster_name" {
  description = "Name of the Titus cluster; prefixes resource names and is the value of the titus:cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "vpc_id" {
  description = "VPC the ensemble runs in."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC; members may send anything inside it."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr_block, 0))
    error_message = "vpc_cidr_block must be a valid IPv4 CIDR."
  }
}

variable "subnet_ids" {
  description = "Private subnets the members are spread across round-robin (three AZs keep a quorum through an AZ outage)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "node_count" {
  description = "Members of the ensemble; odd, so a majority exists."
  type        = number
  default     = 3

  validation {
    condition     = contains([1, 3, 5], var.node_count)
    error_message = "node_count must be 1, 3 or 5 (an odd ensemble size)."
  }
}

variable "ami_id" {
  description = "AMI the members boot."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the members."
  type        = string
  default     = "t3.medium"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as t3.medium."
  }
}

variable "root_volume_size" {
  description = "Size in GiB of the encrypted root volume (holds the ZooKeeper data directory)."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 1024
    error_message = "root_volume_size must be between 8 and 1024 GiB."
  }
}

variable "root_device_name" {
  description = "Root device name of the AMI."
  type        = string
  default     = "/dev/xvda"
}

variable "kms_key_arn" {
  description = "ARN of the cluster KMS key that encrypts the volumes."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "client_security_group_ids" {
  description = "Security groups allowed to use ZooKeeper on 2181 (masters, Mesos masters), keyed by a static name."
  type        = map(string)
  default     = {}
}

variable "ssh_ingress_cidr_blocks" {
  description = "CIDRs (a bastion's) allowed to SSH to the members; 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_ingress_cidr_blocks : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "ssh_ingress_cidr_blocks must be valid IPv4 CIDRs of a bastion; 0.0.0.0/0 is not allowed."
  }
}

variable "key_name" {
  description = "EC2 key pair for SSH through the bastion; null for none."
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

variable "tags" {
  description = "Tags added to every resource (the titus:cluster tag is always added)."
  type        = map(string)
  default     = {}
}
