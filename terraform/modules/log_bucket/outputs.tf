output "bucket_name" {
  description = "Name of the task log bucket (TITUS_LOG_S3_BUCKET of masters and agents)."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the task log bucket, for IAM policies."
  value       = aws_s3_bucket.this.arn
}

output "prefix" {
  description = "Key prefix of the task logs (TITUS_LOG_S3_PREFIX)."
  value       = var.prefix
}

output "retention_days" {
  description = "Days the bucket keeps a finished task's logs."
  value       = var.retention_days
}
