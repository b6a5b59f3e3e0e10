variable "cluster_name" {
  description = "Name of the Titus cluster the instance belongs to."
  type        = string
}

variable "role" {
  description = "Which component the instance runs; the Ansible site playbook applies the matching roles."
  type        = string

  validation {
    condition     = contains(["master", "agent", "zookeeper", "cassandra", "mesos"], var.role)
    error_message = "role must be one of master, agent, zookeeper, cassandra, mesos."
  }
}

variable "region" {
  description = "AWS region the instance runs in (the roles call SSM there)."
  type        = string
}

variable "facts" {
  description = "Non-secret cluster facts handed to Ansible as extra vars (addresses, names, SSM parameter names); never tokens."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.facts) : can(regex("^titus_[a-z0-9_]+$", k)) && !can(regex("(?i)token$|secret|password", k))])
    error_message = "facts keys must be titus_* names and must not hold a token, secret or password (pass the SSM parameter name, suffix _parameter)."
  }
}

variable "ansible_repo_url" {
  description = "HTTPS URL of the git repository holding ansible/site.yml, pulled by ansible-pull at boot."
  type        = string

  validation {
    condition     = can(regex("^https://", var.ansible_repo_url))
    error_message = "ansible_repo_url must be an https:// git URL."
  }
}

variable "ansible_version" {
  description = "Branch, tag or commit of ansible_repo_url to check out; pin a tag or commit in production."
  type        = string
}

variable "ansible_playbook" {
  description = "Playbook path inside the repository."
  type        = string
  default     = "ansible/site.yml"
}

variable "ansible_core_spec" {
  description = "pip requirement for ansible-core installed into the bootstrap virtualenv (pinned: the collections below are tested with it)."
  type        = string
  default     = "ansible-core==2.17.14"
}

variable "ansible_collections" {
  description = "Ansible collections (name => exact version) installed before ansible-pull: the ones the roles use, as pinned in ansible/requirements.yml."
  type        = map(string)
  default = {
    "amazon.aws"        = "8.2.1"
    "community.general" = "9.5.2"
    "ansible.posix"     = "1.6.2"
  }

  validation {
    condition     = alltrue([for n, v in var.ansible_collections : can(regex("^[a-z0-9_]+\\.[a-z0-9_]+$", n)) && can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", v))])
    error_message = "ansible_collections must map namespace.name to an exact version such as 8.2.1."
  }
}

variable "bootstrap_command" {
  description = "Command of a packaged bootstrap baked into the AMI, run with the facts file path instead of ansible-pull; empty to use ansible-pull."
  type        = string
  default     = ""
}
