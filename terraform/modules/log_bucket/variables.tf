variable "cluster_name" {
  description = "Name of the Titus cluster; prefixes the bucket name and is the value of the titus:cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,26}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-28 characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen."
  }
}

variable "kms_key_arn" {
  description = "KMS key the bucket encrypts every object with (the cluster key)."
  type        = string
}

variable "prefix" {
  description = "Key prefix of the task logs (objects are <prefix>/<task id>/<stream>); no leading or trailing slash."
  type        = string
  default     = "task-logs"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$", var.prefix))
    error_message = "prefix must be path segments of letters, digits, '.', '_' and '-' joined by '/', with no leading or trailing slash."
  }
}

variable "retention_days" {
  description = "Days a finished task's logs are kept before S3 expires them."
  type        = number
  default     = 30

  validation {
    condition     = var.retention_days >= 1 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days, at least 1."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the bucket with the logs in it (otherwise destroy stops at a non-empty bucket)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource; titus:cluster is always added."
  type        = map(string)
  default     = {}
}
