variable "cluster_name" {
  description = "Name of the Titus cluster; prefixes resource names and is the value of the titus:cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,26}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-28 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen (the API load balancer name adds \"-api\")."
  }
}

variable "vpc_id" {
  description = "VPC the masters run in."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC; masters may send anything inside it (ZooKeeper, Cassandra, Mesos, DNS)."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr_block, 0))
    error_message = "vpc_cidr_block must be a valid IPv4 CIDR."
  }
}

variable "subnet_ids" {
  description = "Private subnets the masters (and an internal API load balancer) use, one per availability zone."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "public_subnet_ids" {
  description = "Public subnets for the API load balancer when api_internet_facing is true."
  type        = list(string)
  default     = []
}

variable "ami_id" {
  description = "AMI the masters boot (Debian 12 or Amazon Linux 2023 with cloud-init)."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the masters."
  type        = string
  default     = "m5.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as m5.large."
  }
}

variable "master_count" {
  description = "Number of masters; an odd number so a majority survives the loss of one (one leader, the rest standby)."
  type        = number
  default     = 3

  validation {
    condition     = contains([1, 3, 5], var.master_count)
    error_message = "master_count must be 1, 3 or 5."
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

variable "kms_key_arn" {
  description = "ARN of the cluster KMS key: encrypts EBS volumes and the token parameters."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "api_port" {
  description = "TCP port of the Titus API on the masters and on the load balancer."
  type        = number
  default     = 7001

  validation {
    condition     = var.api_port >= 1024 && var.api_port <= 65535
    error_message = "api_port must be an unprivileged port between 1024 and 65535."
  }
}

variable "api_ingress_cidr_blocks" {
  description = "CIDRs allowed to call the API through the load balancer; 0.0.0.0/0 opens it to the internet (then also set api_internet_facing and api_certificate_arn)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.api_ingress_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "api_ingress_cidr_blocks must contain valid IPv4 CIDRs such as 203.0.113.0/24."
  }
}

variable "api_client_security_group_ids" {
  description = "Security groups allowed to call the API through the load balancer, keyed by a static name (e.g. { critical = sg-..., flex = sg-... }) so Terraform can plan before the groups exist."
  type        = map(string)
  default     = {}
}

variable "api_internet_facing" {
  description = "Put the API load balancer in the public subnets; keep false and reach the API over VPN or a bastion unless you must."
  type        = bool
  default     = false
}

variable "api_certificate_arn" {
  description = "ACM certificate ARN; when set the load balancer terminates TLS for the API (strongly advised when internet-facing)."
  type        = string
  default     = null

  validation {
    condition     = var.api_certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:", var.api_certificate_arn))
    error_message = "api_certificate_arn must be an ACM certificate ARN."
  }
}

variable "zookeeper_connect_string" {
  description = "ZooKeeper host:port list the masters elect their leader in, e.g. 10.0.0.5:2181,10.0.16.5:2181."
  type        = string

  validation {
    condition     = can(regex("^[^,:]+:[0-9]+(,[^,:]+:[0-9]+)*$", var.zookeeper_connect_string))
    error_message = "zookeeper_connect_string must be a comma-separated host:port list."
  }
}

variable "cassandra_hosts" {
  description = "Cassandra contact points the masters store jobs and tasks in."
  type        = list(string)

  validation {
    condition     = length(var.cassandra_hosts) > 0
    error_message = "cassandra_hosts must list at least one host."
  }
}

variable "enable_capacity_controller" {
  description = "Run the capacity controller on the masters (it resizes the agent groups it finds by the cluster tags)."
  type        = bool
  default     = true
}

variable "create_tokens" {
  description = "Generate the API and agent tokens into SSM SecureString parameters; false to use parameters you created (the values then stay out of Terraform state)."
  type        = bool
  default     = true
}

variable "api_token_parameter_name" {
  description = "Existing SSM SecureString parameter with the API token, used when create_tokens is false."
  type        = string
  default     = null

  validation {
    condition     = var.api_token_parameter_name == null || can(regex("^/[A-Za-z0-9_.\\-/]+$", var.api_token_parameter_name))
    error_message = "api_token_parameter_name must be an SSM parameter path starting with /."
  }
}

variable "agent_token_parameter_name" {
  description = "Existing SSM SecureString parameter with the agent token, used when create_tokens is false."
  type        = string
  default     = null

  validation {
    condition     = var.agent_token_parameter_name == null || can(regex("^/[A-Za-z0-9_.\\-/]+$", var.agent_token_parameter_name))
    error_message = "agent_token_parameter_name must be an SSM parameter path starting with /."
  }
}

variable "ssh_ingress_cidr_blocks" {
  description = "CIDRs (a bastion's) allowed to SSH to the masters; 0.0.0.0/0 is refused."
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

variable "autoscaling_group_tags" {
  description = "Extra tags for the masters' autoscaling group and instances."
  type        = map(string)
  default     = {}
}

variable "task_log_bucket" {
  description = "Where finished tasks' logs go (modules/log_bucket's outputs): the masters may read them back. null: no archive, a task's logs go with its agent."
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
