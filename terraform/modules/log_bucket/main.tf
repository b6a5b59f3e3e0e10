# The bucket finished tasks' logs go to (shared/log_archive.py): agents put each stream once its task has
# ended, masters read ranges back once no agent holds the files. Private, encrypted with the cluster key,
# and expired after the retention period by its own lifecycle rule (so the masters need no right to change
# the bucket: Ansible tells them to leave its lifecycle alone).

locals {
  tags = merge(var.tags, { "titus:cluster" = var.cluster_name })

  # S3 caps bucket_prefix at 37 characters; the provider appends a unique suffix.
  bucket_prefix = substr("titus-${var.cluster_name}-logs-", 0, 37)
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Server access logs of this bucket would need a second bucket, whose own logs need a third; CloudTrail data events are the audit trail for task logs.
  #checkov:skip=CKV_AWS_144:Task logs are diagnostics with a retention of days; replicating them to a second region doubles their cost for no recovery a user needs.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to a task's logs arriving; masters read them on demand.
  bucket_prefix = local.bucket_prefix
  force_destroy = var.force_destroy

  tags = merge(local.tags, { Name = "${var.cluster_name}-task-logs" })
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# No ACLs at all: the bucket policy and the roles' IAM policies are the only access there is.
resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # One data key per bucket rather than per object: far fewer KMS calls for thousands of small logs.
    bucket_key_enabled = true
  }
}

# Retention: the rule id is the one the master would set itself (shared/log_archive.py RULE_ID), so a
# master that was told to manage retention after all replaces this rule instead of adding a second one.
resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "titus-task-logs"
    status = "Enabled"

    filter {
      prefix = "${var.prefix}/"
    }

    expiration {
      days = var.retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # The archive puts each stream in one request; a multipart upload left over by anything is dropped.
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

# Only TLS: a task's output can hold anything, so it never crosses the network in the clear.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.this]
}
