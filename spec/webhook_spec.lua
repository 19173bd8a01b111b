-- Registry webhooks, as `replica serve` receives them: which notifications
-- become artifact events for replication, and what those events say.
local t = require("tap").new(...)
local webhook = require("webhook")

-- Decodes a JSON text, failing the test when it is invalid.
local function decode(text)
  local v, err = json.decode(text)
  t.ok(v ~= nil, err)
  return v
end

-- Checks the fields of one event against want (absent fields must be nil).
local function same(got, want, what)
  t.ok(type(got) == "table", what .. ": expected an event")
  for _, k in ipairs({ "action", "repository", "tag", "digest", "media_type", "host", "id", "time" }) do
    t.eq(got[k], want[k], what .. "." .. k)
  end
end

local MANIFEST = "sha256:05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f"
local LAYER = "sha256:dac1d7cfa95021764849fd102524e141488c5e3a90f861dbb5a12d9ac8584f85"
local INDEX = "sha256:1bc04b5291c26a46d918139138b992d2de976d6851d0893b0476b85bfbdfc6e6"
local DELETED = "sha256:75e3090289e2955dfaecfe21eabbe80b7146ab62339454a3dcd1a0ca53111381"

local DISTRIBUTION = [[
{
  "events": [
    {
      "id": "9a1f3c2e-0b5d-4a6e-8f7a-1c2d3e4f5a60",
      "timestamp": "2024-03-10T14:22:35.118305792Z",
      "action": "push",
      "target": {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "size": 3408729,
        "digest": "]] .. LAYER .. [[",
        "length": 3408729,
        "repository": "library/alpine",
        "url": "http://registry.example:5000/v2/library/alpine/blobs/]] .. LAYER .. [["
      },
      "request": {
        "id": "2f0c5a4b-7d3e-4c1a-9b8f-6e5d4c3b2a19",
        "addr": "10.0.3.17:51022",
        "host": "registry.example:5000",
        "method": "PUT",
        "useragent": "containerd/1.7.13"
      },
      "actor": { "name": "ci" },
      "source": { "addr": "registry-0:5000", "instanceID": "c4d1e2f3-a5b6-4c7d-8e9f-0a1b2c3d4e5f" }
    },
    {
      "id": "b7e2d4c1-3a5f-4e6d-9c8b-7a6f5e4d3c21",
      "timestamp": "2024-03-10T14:22:36.004512345Z",
      "action": "push",
      "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 1022,
        "digest": "]] .. MANIFEST .. [[",
        "length": 1022,
        "repository": "library/alpine",
        "url": "http://registry.example:5000/v2/library/alpine/manifests/]] .. MANIFEST .. [[",
        "tag": "3.19"
      },
      "request": {
        "id": "5c4b3a29-1807-4f6e-8d5c-4b3a29180716",
        "addr": "10.0.3.17:51022",
        "host": "registry.example:5000",
        "method": "PUT",
        "useragent": "containerd/1.7.13"
      },
      "actor": { "name": "ci" },
      "source": { "addr": "registry-0:5000", "instanceID": "c4d1e2f3-a5b6-4c7d-8e9f-0a1b2c3d4e5f" }
    },
    {
      "id": "e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9",
      "timestamp": "2024-03-10T14:25:01.771209Z",
      "action": "pull",
      "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 1022,
        "digest": "]] .. MANIFEST .. [[",
        "length": 1022,
        "repository": "library/alpine",
        "url": "http://registry.example:5000/v2/library/alpine/manifests/]] .. MANIFEST .. [[",
        "tag": "3.19"
      },
      "request": {
        "id": "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d",
        "addr": "10.0.4.2:40112",
        "host": "registry.example:5000",
        "method": "GET",
        "useragent": "docker/25.0.3"
      },
      "actor": {},
      "source": { "addr": "registry-0:5000", "instanceID": "c4d1e2f3-a5b6-4c7d-8e9f-0a1b2c3d4e5f" }
    },
    {
      "id": "f0e9d8c7-b6a5-4493-8281-706f5e4d3c2b",
      "timestamp": "2024-03-10T15:01:12.5Z",
      "action": "delete",
      "target": {
        "digest": "]] .. DELETED .. [[",
        "repository": "library/alpine"
      },
      "request": {
        "id": "7a6b5c4d-3e2f-4101-9f8e-7d6c5b4a3928",
        "addr": "10.0.3.9:33410",
        "host": "registry.example:5000",
        "method": "DELETE",
        "useragent": "regctl/v0.5.7"
      },
      "actor": { "name": "admin" },
      "source": { "addr": "registry-0:5000", "instanceID": "c4d1e2f3-a5b6-4c7d-8e9f-0a1b2c3d4e5f" }
    }
  ]
}
]]

t.test("Distribution: only manifest pushes and deletes become events", function()
  local events, err = webhook.distribution(decode(DISTRIBUTION))
  t.ok(events, err)
  t.eq(#events, 2, "the layer push and the pull are left out")
  same(events[1], {
    action = "push", repository = "library/alpine", tag = "3.19", digest = MANIFEST,
    media_type = "application/vnd.oci.image.manifest.v1+json", host = "registry.example:5000",
    id = "b7e2d4c1-3a5f-4e6d-9c8b-7a6f5e4d3c21", time = "2024-03-10T14:22:36.004512345Z",
  }, "push")
  same(events[2], {
    action = "delete", repository = "library/alpine", digest = DELETED,
    host = "registry.example:5000", id = "f0e9d8c7-b6a5-4493-8281-706f5e4d3c2b",
    time = "2024-03-10T15:01:12.5Z",
  }, "delete")
end)

t.test("Distribution: a push by digest has no tag; indexes and Docker types count", function()
  local events = webhook.distribution(decode([[
    { "events": [
      { "id": "11111111-2222-4333-8444-555555555555", "timestamp": "2024-03-10T16:00:00Z",
        "action": "push",
        "target": { "mediaType": "application/vnd.oci.image.index.v1+json", "size": 2371,
                    "digest": "]] .. INDEX .. [[", "length": 2371, "repository": "team/app",
                    "url": "https://reg.internal/v2/team/app/manifests/]] .. INDEX .. [[" },
        "request": { "id": "r1", "addr": "10.1.1.1:5000", "host": "reg.internal", "method": "PUT",
                     "useragent": "buildkit/v0.12" },
        "actor": {}, "source": { "addr": "reg-1:5000", "instanceID": "i1" } },
      { "id": "22222222-3333-4444-8555-666666666666", "timestamp": "2024-03-10T16:00:01Z",
        "action": "push",
        "target": { "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "size": 528, "digest": "]] .. MANIFEST .. [[", "length": 528,
                    "repository": "team/app", "tag": "v2" },
        "request": { "host": "reg.internal" } },
      { "id": "33333333-4444-4555-8666-777777777777", "action": "mount",
        "target": { "mediaType": "application/octet-stream", "digest": "]] .. LAYER .. [[",
                    "repository": "team/app", "fromRepository": "team/base" } }
    ] }
  ]]))
  t.eq(#events, 2)
  same(events[1], {
    action = "push", repository = "team/app", digest = INDEX,
    media_type = "application/vnd.oci.image.index.v1+json", host = "reg.internal",
    id = "11111111-2222-4333-8444-555555555555", time = "2024-03-10T16:00:00Z",
  }, "index pushed by digest")
  t.eq(events[2].tag, "v2")
  t.eq(events[2].media_type, "application/vnd.docker.distribution.manifest.v2+json")
end)

t.test("Distribution: tag deletes are kept; blob and repository deletes are not", function()
  local events = webhook.distribution(decode([[
    { "events": [
      { "id": "a", "action": "delete", "target": { "repository": "team/app", "tag": "old" } },
      { "id": "b", "action": "delete",
        "target": { "repository": "team/app", "digest": "]] .. LAYER .. [[",
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip" } },
      { "id": "c", "action": "delete", "target": { "repository": "team/app" } }
    ] }
  ]]))
  t.eq(#events, 1)
  same(events[1], { action = "delete", repository = "team/app", tag = "old", id = "a" }, "tag delete")
end)

t.test("Distribution: malformed events are skipped, malformed envelopes fail", function()
  local events = webhook.distribution(decode([[
    { "events": [
      "not an event",
      { "action": "push" },
      { "action": "push", "target": null },
      { "action": "push", "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": "]] .. MANIFEST .. [[" } },
      { "action": "push", "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": "]] .. MANIFEST .. [[", "repository": "" } },
      { "action": "push", "request": null,
        "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "]] .. MANIFEST .. [[", "repository": "ok/one", "tag": null } }
    ] }
  ]]))
  t.eq(#events, 1, "only the well-formed event is left")
  t.eq(events[1].repository, "ok/one")
  t.eq(events[1].tag, nil, "a null tag is no tag")
  t.eq(events[1].host, nil)

  local empty, err = webhook.distribution(decode('{ "events": [] }'))
  t.eq(#empty, 0, err)
  for _, body in ipairs({ "[]", '{ "events": {"a": 1} }', '{ "events": null }', '{ "event": [] }' }) do
    local r, e = webhook.distribution(decode(body))
    t.eq(r, nil, body)
    t.match(e, '"events" is missing or not an array', body)
  end
  local r, e = webhook.distribution("not decoded")
  t.eq(r, nil)
  t.match(e, "not a JSON object")
end)

local HARBOR_PUSH = [[
{
  "type": "PUSH_ARTIFACT",
  "occur_at": 1700000000,
  "operator": "admin",
  "event_data": {
    "resources": [
      {
        "digest": "sha256:b17bd74e8df0a4a58c2753cfe6e94e9bbb071109608e7c6854665af943aa189a",
        "tag": "1.25",
        "resource_url": "harbor.example.com/library/nginx:1.25"
      },
      {
        "digest": "sha256:b17bd74e8df0a4a58c2753cfe6e94e9bbb071109608e7c6854665af943aa189a",
        "tag": "latest",
        "resource_url": "harbor.example.com/library/nginx:latest"
      }
    ],
    "repository": {
      "date_created": 1699990000,
      "name": "nginx",
      "namespace": "library",
      "repo_full_name": "library/nginx",
      "repo_type": "private"
    }
  }
}
]]

local NGINX = "sha256:b17bd74e8df0a4a58c2753cfe6e94e9bbb071109608e7c6854665af943aa189a"

t.test("Harbor Default: one push event per resource", function()
  local events, err = webhook.harbor(decode(HARBOR_PUSH))
  t.ok(events, err)
  t.eq(#events, 2)
  -- occur_at 1700000000 is 2023-11-14 22:13:20 UTC
  same(events[1], {
    action = "push", repository = "library/nginx", tag = "1.25", digest = NGINX,
    host = "harbor.example.com", time = "2023-11-14T22:13:20Z",
  }, "first resource")
  same(events[2], {
    action = "push", repository = "library/nginx", tag = "latest", digest = NGINX,
    host = "harbor.example.com", time = "2023-11-14T22:13:20Z",
  }, "second resource")
end)

t.test("Harbor Default: DELETE_ARTIFACT, and a push by digest", function()
  local events = webhook.harbor(decode([[
    {
      "type": "DELETE_ARTIFACT",
      "occur_at": 1700003600,
      "operator": "robot$cleanup",
      "event_data": {
        "resources": [
          { "digest": "sha256:f49150c0b77073269f444e202a3f20ad91359874ca458b9494bd531358da1cbe",
            "tag": "1.24", "resource_url": "harbor.example.com:8443/library/nginx:1.24" }
        ],
        "repository": { "name": "nginx", "namespace": "library", "repo_type": "private" }
      }
    }
  ]]))
  t.eq(#events, 1)
  -- 1700003600 is 2023-11-14 23:13:20 UTC; no repo_full_name: namespace/name
  same(events[1], {
    action = "delete", repository = "library/nginx", tag = "1.24",
    digest = "sha256:f49150c0b77073269f444e202a3f20ad91359874ca458b9494bd531358da1cbe",
    host = "harbor.example.com:8443", time = "2023-11-14T23:13:20Z",
  }, "delete")

  -- Harbor puts the digest in "tag" when an artifact is pushed by digest.
  local pushed = webhook.harbor(decode([[
    { "type": "PUSH_ARTIFACT", "occur_at": 1700000000, "operator": "ci",
      "event_data": {
        "resources": [ { "digest": "]] .. NGINX .. [[", "tag": "]] .. NGINX .. [[",
                         "resource_url": "harbor.example.com/library/nginx@]] .. NGINX .. [[" } ],
        "repository": { "name": "nginx", "namespace": "library", "repo_full_name": "library/nginx" } } }
  ]]))
  t.eq(#pushed, 1)
  t.eq(pushed[1].tag, nil, "a digest in the tag field is no tag")
  t.eq(pushed[1].digest, NGINX)
  t.eq(pushed[1].host, "harbor.example.com")
end)

t.test("Harbor Default: other event types give no events", function()
  for _, kind in ipairs({ "PULL_ARTIFACT", "SCANNING_COMPLETED", "QUOTA_WARNING", "REPLICATION" }) do
    local body = decode(HARBOR_PUSH)
    body.type = kind
    local events, err = webhook.harbor(body)
    t.ok(events, err)
    t.eq(#events, 0, kind)
  end
end)

t.test("Harbor CloudEvents: pushed and deleted", function()
  local pushed, err = webhook.harbor(decode([[
    {
      "specversion": "1.0",
      "id": "66e18103-09c1-41f6-982f-37df223f3eeb",
      "requestid": "51c0b694-0168-4f3c-b0db-282565455d7b",
      "source": "/projects/2/webhook/policies/15",
      "type": "harbor.artifact.pushed",
      "datacontenttype": "application/json",
      "time": "2024-03-10T14:22:36Z",
      "operator": "admin",
      "data": {
        "resources": [
          { "digest": "]] .. NGINX .. [[", "tag": "stable",
            "resource_url": "registry.example.com/team/web:stable" }
        ],
        "repository": { "date_created": 1699990000, "name": "web", "namespace": "team",
                        "repo_full_name": "team/web", "repo_type": "public" }
      }
    }
  ]]))
  t.ok(pushed, err)
  t.eq(#pushed, 1)
  same(pushed[1], {
    action = "push", repository = "team/web", tag = "stable", digest = NGINX,
    host = "registry.example.com", id = "66e18103-09c1-41f6-982f-37df223f3eeb",
    time = "2024-03-10T14:22:36Z",
  }, "pushed")

  local deleted = webhook.harbor(decode([[
    {
      "specversion": "1.0",
      "id": "0d7c3f1e-5b2a-4c9d-8e6f-1a2b3c4d5e6f",
      "source": "/projects/2/webhook/policies/15",
      "type": "harbor.artifact.deleted",
      "datacontenttype": "application/json",
      "time": "2024-03-11T09:00:00Z",
      "operator": "admin",
      "data": {
        "resources": [ { "digest": "]] .. NGINX .. [[", "tag": "stable",
                         "resource_url": "registry.example.com/team/web:stable" } ],
        "repository": { "name": "web", "namespace": "team", "repo_full_name": "team/web" }
      }
    }
  ]]))
  t.eq(#deleted, 1)
  t.eq(deleted[1].action, "delete")
  t.eq(deleted[1].id, "0d7c3f1e-5b2a-4c9d-8e6f-1a2b3c4d5e6f")
  t.eq(deleted[1].time, "2024-03-11T09:00:00Z")

  local pulled = webhook.harbor(decode([[
    { "specversion": "1.0", "id": "x", "source": "/projects/2/webhook/policies/15",
      "type": "harbor.artifact.pulled", "time": "2024-03-11T09:00:00Z",
      "data": { "resources": [], "repository": { "repo_full_name": "team/web" } } }
  ]]))
  t.eq(#pulled, 0, "harbor.artifact.pulled gives no events")
end)

t.test("Harbor: malformed bodies fail with a clear error", function()
  local cases = {
    { '"PUSH_ARTIFACT"', "not a JSON object" },
    { '{ "occur_at": 1700000000, "event_data": {} }', '"type" is missing' },
    { '{ "type": "PUSH_ARTIFACT", "occur_at": 1700000000 }', 'PUSH_ARTIFACT has no list of "resources"' },
    { '{ "type": "PUSH_ARTIFACT", "event_data": { "resources": {"a": 1} } }', 'no list of "resources"' },
    { '{ "type": "DELETE_ARTIFACT", "event_data": { "resources": [], "repository": {} } }',
      "DELETE_ARTIFACT names no repository" },
    { '{ "specversion": "1.0", "type": "harbor.artifact.pushed", "data": null }',
      'harbor.artifact.pushed has no list of "resources"' },
  }
  for _, c in ipairs(cases) do
    local events, err = webhook.harbor(decode(c[1]))
    t.eq(events, nil, c[1])
    t.match(err, c[2], c[1])
  end
  -- A resource with neither digest nor tag is skipped, not fatal.
  local events = webhook.harbor(decode([[
    { "type": "PUSH_ARTIFACT", "occur_at": "not a time",
      "event_data": { "resources": [ {}, "x", { "tag": "v1" } ],
                      "repository": { "repo_full_name": "a/b" } } }
  ]]))
  t.eq(#events, 1)
  same(events[1], { action = "push", repository = "a/b", tag = "v1" }, "tag only")
end)

t.test("Distribution: an event whose repository, tag or digest is not a valid name is left out", function()
  -- A delete for team-a/../team-b/app would pass a policy for team-a/** and,
  -- once libcurl resolved the "..", delete team-b/app.
  local events = webhook.distribution(decode([[
    { "events": [
      { "action": "delete", "target": { "repository": "team-a/../team-b/app", "tag": "v1" } },
      { "action": "delete", "target": { "repository": "team-a/./app", "digest": "]] .. MANIFEST .. [[" } },
      { "action": "push", "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": "]] .. MANIFEST .. [[", "repository": "Team-A/app" } },
      { "action": "push", "target": { "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": "]] .. MANIFEST .. [[", "repository": "team-a/app",
                                      "tag": "../v1" } },
      { "action": "delete", "target": { "repository": "team-a/app", "digest": "sha256:../../x" } },
      { "action": "delete", "target": { "repository": "team-a/app", "tag": "v1" } }
    ] }
  ]]))
  t.eq(#events, 1, "only the valid event is left")
  same(events[1], { action = "delete", repository = "team-a/app", tag = "v1" }, "the valid delete")
end)

t.test("Harbor: a repository that is not a valid name fails the payload; a bad tag is left out", function()
  local events, err = webhook.harbor(decode([[
    { "type": "DELETE_ARTIFACT", "occur_at": 1700000000,
      "event_data": { "resources": [ { "tag": "v1" } ],
                      "repository": { "repo_full_name": "team-a/../team-b/app" } } }
  ]]))
  t.eq(events, nil)
  t.match(err, '^harbor webhook: DELETE_ARTIFACT: invalid repository name "team%-a/%.%./team%-b/app": ')
  events, err = webhook.harbor(decode([[
    { "specversion": "1.0", "type": "harbor.artifact.deleted",
      "data": { "resources": [ { "tag": "v1" } ],
                "repository": { "namespace": "team-a/..", "name": "team-b" } } }
  ]]))
  t.eq(events, nil)
  t.match(err, "invalid repository name")
  events = webhook.harbor(decode([[
    { "type": "PUSH_ARTIFACT", "occur_at": 1700000000,
      "event_data": { "resources": [ { "tag": ".." }, { "tag": "v1", "digest": "md5:" }, { "tag": "v2" } ],
                      "repository": { "repo_full_name": "team-a/app" } } }
  ]]))
  t.eq(#events, 1)
  same(events[1], { action = "push", repository = "team-a/app", tag = "v2",
                    time = "2023-11-14T22:13:20Z" }, "the valid resource")
end)

t.test("is_manifest_type knows manifest and index media types", function()
  local yes = {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
  }
  for _, mt in ipairs(yes) do t.eq(webhook.is_manifest_type(mt), true, mt) end
  local no = {
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.config.v1+json",
    "application/octet-stream", "", nil, json.null,
  }
  for i = 1, 7 do t.eq(webhook.is_manifest_type(no[i]), false, tostring(no[i])) end
end)

t.done()
