variable "cluster_name" {
  description = "Name of the Titus cluster; prefixes resource names and is the value of the titus:cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "vpc_id" {
  description = "VPC the ring runs in."
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
  description = "Private subnets the nodes are spread across round-robin; three AZs map to three racks so replication factor 3 survives an AZ outage."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "node_count" {
  description = "Nodes in the ring; at least three for replication factor 3 with QUORUM reads and writes."
  type        = number
  default     = 3

  validation {
    condition     = var.node_count >= 1 && var.node_count <= 60 && floor(var.node_count) == var.node_count
    error_message = "node_count must be a whole number from 1 to 60."
  }
}

variable "seed_count" {
  description = "How many of the first nodes act as seeds (gossip contact points); two or three is typical."
  type        = number
  default     = 3

  validation {
    condition     = var.seed_count >= 1 && var.seed_count <= 5
    error_message = "seed_count must be between 1 and 5."
  }
}

variable "data_volume_size" {
  description = "Size in GiB of each node's encrypted data volume (kept when the instance is replaced)."
  type        = number
  default     = 200

  validation {
    condition     = var.data_volume_size >= 20 && var.data_volume_size <= 16384
    error_message = "data_volume_size must be between 20 and 16384 GiB."
  }
}

variable "data_volume_iops" {
  description = "Provisioned IOPS of each gp3 data volume."
  type        = number
  default     = 3000

  validation {
    condition     = var.data_volume_iops >= 3000 && var.data_volume_iops <= 16000
    error_message = "data_volume_iops must be between 3000 and 16000 (gp3)."
  }
}

variable "ami_id" {
  description = "AMI the nodes boot."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the nodes (memory matters most to Cassandra)."
  type        = string
  default     = "r5.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as r5.large."
  }
}

variable "root_volume_size" {
  description = "Size in GiB of the encrypted root volume (commit log and data live on the data volume)."
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
  description = "Security groups allowed to use CQL on 9042 (the masters), keyed by a static name."
  type        = map(string)
  default     = {}
}

variable "ssh_ingress_cidr_blocks" {
  description = "CIDRs (a bastion's) allowed to SSH to the nodes; 0.0.0.0/0 is refused."
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
