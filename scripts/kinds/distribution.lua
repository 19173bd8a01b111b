-- kinds/distribution: CNCF Distribution and any registry that follows the
-- OCI distribution spec: Basic or the Docker token flow from the
-- registry's own challenge, /v2/_catalog for listing, repositories created
-- on first push. Every other kind starts from this one.
return {
  description = "CNCF Distribution, or any OCI-conformant registry",
  credentials = {
    { name = "username", label = "Username" },
    { name = "password", label = "Password or token", secret = true },
  },
}
