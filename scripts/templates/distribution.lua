-- The default template: any OCI registry to a CNCF Distribution (or any
-- OCI-conformant) registry.
return {
  description = "CNCF Distribution / any OCI registry -> CNCF Distribution",
  source = "distribution",
  target = "distribution",
  stages = {
    { "pull_prepare", "distribution/pull_prepare" },
    { "pull",         "distribution/pull" },
    { "pull_post",    "distribution/pull_post" },
    { "push_prepare", "distribution/push_prepare" },
    { "push",         "distribution/push" },
    { "push_post",    "distribution/verify" },
  },
  -- Run for deletions replicated from webhook events (policies with
  -- replicate_deletion on).
  delete_stages = {
    { "delete", "distribution/delete" },
  },
}
