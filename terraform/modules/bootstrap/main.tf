# Renders the cloud-init user data every Titus instance boots with. It holds only non-secret facts
# (addresses, names, which SSM parameters hold the tokens); the Ansible roles read the secrets at boot
# through the instance role, so nothing sensitive sits in user data or in the launch templates.

locals {
  facts = merge(var.facts, {
    titus_cluster_name = var.cluster_name
    titus_role         = var.role
    titus_aws_region   = var.region
  })

  user_data = templatefile("${path.module}/templates/user_data.sh.tftpl", {
    facts_json        = jsonencode(local.facts)
    role              = var.role
    ansible_repo_url  = var.ansible_repo_url
    ansible_version   = var.ansible_version
    ansible_playbook  = var.ansible_playbook
    ansible_core_spec = var.ansible_core_spec
    collections       = join(" ", [for n in sort(keys(var.ansible_collections)) : "'${n}:==${var.ansible_collections[n]}'"])
    bootstrap_command = var.bootstrap_command
  })
}
