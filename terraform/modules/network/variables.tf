variable "cluster_name" {
  description = "Name of the Titus cluster; prefixes resource names and is the value of the titus:cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "create_vpc" {
  description = "Create a VPC with public and private subnets across var.azs; when false, use vpc_id and the given subnet IDs."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC to create (a /16 to /20; private subnets take 1/16 of it each, public subnets a /24-sized slice each)."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR with a prefix length between /16 and /20, e.g. 10.42.0.0/16."
  }
}

variable "azs" {
  description = "Availability zones to spread subnets across when creating the VPC; exactly three so ZooKeeper and Cassandra survive the loss of one."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.azs) == 0 || length(var.azs) == 3
    error_message = "azs must list exactly three availability zones (or be empty when create_vpc is false)."
  }
}

variable "single_nat_gateway" {
  description = "Use one NAT gateway for all private subnets (cheaper) instead of one per availability zone (survives an AZ outage)."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "ID of an existing VPC to use when create_vpc is false."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "private_subnet_ids" {
  description = "IDs of existing private subnets (one per availability zone, three recommended) when create_vpc is false."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "private_subnet_ids must contain subnet IDs like subnet-0123456789abcdef0."
  }
}

variable "public_subnet_ids" {
  description = "IDs of existing public subnets, needed only when the API load balancer is internet-facing and create_vpc is false."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.public_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "public_subnet_ids must contain subnet IDs like subnet-0123456789abcdef0."
  }
}

variable "create_flow_log" {
  description = "Record VPC flow logs to an encrypted CloudWatch log group (only for a VPC this module creates)."
  type        = bool
  default     = true
}

variable "flow_log_retention_in_days" {
  description = "Days to keep VPC flow logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_in_days)
    error_message = "flow_log_retention_in_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}

variable "kms_key_arn" {
  description = "ARN of the cluster's KMS key; encrypts the flow log group (the key policy must allow CloudWatch Logs)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "tags" {
  description = "Tags added to every resource (the titus:cluster tag is always added)."
  type        = map(string)
  default     = {}
}
