variable "region" {
  description = "AWS region to build the cluster in."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "cluster_name" {
  description = "Name of the Titus cluster: prefixes every resource and is the value of the titus:cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,26}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-28 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "create_log_bucket" {
  description = "Create the S3 bucket finished tasks' logs are kept in (agents put them, masters serve them once the agent is gone)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days the log bucket keeps a finished task's logs."
  type        = number
  default     = 30
}

variable "log_bucket_force_destroy" {
  description = "Let `terraform destroy` delete the log bucket with logs still in it."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource (e.g. owner, cost center); titus:cluster is always added."
  type        = map(string)
  default     = {}
}

variable "azs" {
  description = "Three availability zone names for the VPC; empty means the region's a, b and c zones."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.azs) == 0 || length(var.azs) == 3
    error_message = "azs must name exactly three availability zones, or be empty."
  }
}

variable "create_vpc" {
  description = "Create a VPC across three availability zones; false to use vpc_id and the subnet IDs below."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "CIDR of the VPC to create."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR such as 10.42.0.0/16."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for the whole VPC (cheaper) instead of one per AZ."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "Existing VPC when create_vpc is false."
  type        = string
  default     = null
}

variable "private_subnet_ids" {
  description = "Existing private subnets (three AZs) when create_vpc is false."
  type        = list(string)
  default     = []
}

variable "public_subnet_ids" {
  description = "Existing public subnets when create_vpc is false and the API is internet-facing."
  type        = list(string)
  default     = []
}

variable "ami_id" {
  description = "AMI for every instance; null looks up the newest Debian 12 image."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "key_name" {
  description = "EC2 key pair for SSH through the bastion; null for none."
  type        = string
  default     = null
}

variable "bastion_cidr_blocks" {
  description = "CIDRs of a bastion allowed to SSH to every instance; empty means no SSH. 0.0.0.0/0 is refused."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.bastion_cidr_blocks : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "bastion_cidr_blocks must be valid IPv4 CIDRs of a bastion; 0.0.0.0/0 is not allowed."
  }
}

variable "api_port" {
  description = "Port of the Titus API."
  type        = number
  default     = 7001

  validation {
    condition     = var.api_port >= 1024 && var.api_port <= 65535
    error_message = "api_port must be between 1024 and 65535."
  }
}

variable "api_ingress_cidr_blocks" {
  description = "CIDRs allowed to call the API (your office, VPN); [\"0.0.0.0/0\"] opens it to the internet. Agents are always allowed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.api_ingress_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "api_ingress_cidr_blocks must contain valid IPv4 CIDRs."
  }
}

variable "api_internet_facing" {
  description = "Put the API load balancer in public subnets (needs api_ingress_cidr_blocks to let anyone in)."
  type        = bool
  default     = false
}

variable "api_certificate_arn" {
  description = "ACM certificate for TLS on the API load balancer; required when the API is internet-facing."
  type        = string
  default     = null

  validation {
    condition     = var.api_certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:", var.api_certificate_arn))
    error_message = "api_certificate_arn must be an ACM certificate ARN."
  }

  validation {
    condition     = !var.api_internet_facing || var.api_certificate_arn != null
    error_message = "An internet-facing API needs api_certificate_arn: tokens must not cross the internet in clear text."
  }
}

variable "master_count" {
  description = "Number of Titus masters (one leader, the rest standby)."
  type        = number
  default     = 3

  validation {
    condition     = contains([1, 3, 5], var.master_count)
    error_message = "master_count must be 1, 3 or 5."
  }
}

variable "master_instance_type" {
  description = "Instance type of the Titus masters."
  type        = string
  default     = "m5.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.master_instance_type))
    error_message = "master_instance_type must be an EC2 instance type such as m5.large."
  }
}

variable "agent_tiers" {
  description = "Sizes of the two agent tiers, keyed critical and flex; the capacity controller moves desired capacity between min_size and max_size."
  type = map(object({
    instance_types                           = list(string)
    min_size                                 = number
    max_size                                 = number
    desired_capacity                         = number
    on_demand_percentage_above_base_capacity = number
    docker_volume_size                       = number
  }))
  default = {
    critical = {
      instance_types                           = ["m5.xlarge"]
      min_size                                 = 2
      max_size                                 = 20
      desired_capacity                         = 2
      on_demand_percentage_above_base_capacity = 100
      docker_volume_size                       = 100
    }
    flex = {
      instance_types                           = ["m5.xlarge", "m5a.xlarge", "m6i.xlarge"]
      min_size                                 = 1
      max_size                                 = 50
      desired_capacity                         = 1
      on_demand_percentage_above_base_capacity = 0
      docker_volume_size                       = 100
    }
  }

  validation {
    condition     = toset(keys(var.agent_tiers)) == toset(["critical", "flex"])
    error_message = "agent_tiers must have exactly the keys \"critical\" and \"flex\"."
  }

  validation {
    condition = alltrue([for t in values(var.agent_tiers) :
      t.min_size >= 0 && t.max_size >= 1 && t.min_size <= t.max_size && t.desired_capacity >= t.min_size && t.desired_capacity <= t.max_size
    ])
    error_message = "In every agent tier 0 <= min_size <= desired_capacity <= max_size and max_size >= 1."
  }

  validation {
    condition = alltrue(flatten([for t in values(var.agent_tiers) :
      [for i in t.instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", i))]
    ])) && alltrue([for t in values(var.agent_tiers) : length(t.instance_types) > 0])
    error_message = "Every agent tier needs at least one instance type, each like m5.xlarge."
  }
}

variable "ecr_repository_arns" {
  description = "ECR repositories the agents may pull task images from; empty grants no ECR access."
  type        = list(string)
  default     = []
}

variable "zookeeper_node_count" {
  description = "ZooKeeper ensemble size."
  type        = number
  default     = 3

  validation {
    condition     = contains([1, 3, 5], var.zookeeper_node_count)
    error_message = "zookeeper_node_count must be 1, 3 or 5."
  }
}

variable "zookeeper_instance_type" {
  description = "Instance type of the ZooKeeper members."
  type        = string
  default     = "t3.medium"
}

variable "cassandra_node_count" {
  description = "Cassandra ring size (three for replication factor 3)."
  type        = number
  default     = 3

  validation {
    condition     = var.cassandra_node_count >= 1 && var.cassandra_node_count <= 60
    error_message = "cassandra_node_count must be between 1 and 60."
  }
}

variable "cassandra_instance_type" {
  description = "Instance type of the Cassandra nodes."
  type        = string
  default     = "r5.large"
}

variable "cassandra_data_volume_size" {
  description = "GiB of the encrypted data volume of each Cassandra node."
  type        = number
  default     = 200
}

variable "create_mesos" {
  description = "Run Mesos masters too (the Titus agents do not need them; for Mesos-based executors)."
  type        = bool
  default     = false
}

variable "mesos_master_count" {
  description = "Number of Mesos masters when create_mesos is true."
  type        = number
  default     = 3
}

variable "mesos_instance_type" {
  description = "Instance type of the Mesos masters."
  type        = string
  default     = "t3.small"
}

variable "ansible_repo_url" {
  description = "HTTPS git URL of the repository with ansible/site.yml that every instance applies at boot with ansible-pull."
  type        = string

  validation {
    condition     = can(regex("^https://", var.ansible_repo_url))
    error_message = "ansible_repo_url must be an https:// git URL."
  }
}

variable "ansible_version" {
  description = "Branch, tag or commit of ansible_repo_url to apply; pin a tag or commit."
  type        = string
  default     = "main"
}

variable "bootstrap_command" {
  description = "Packaged bootstrap command in your AMI to run instead of ansible-pull (gets the facts file path); empty for ansible-pull."
  type        = string
  default     = ""
}
