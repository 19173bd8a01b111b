#!/usr/bin/env bash
# The ECR stand-in (tests/standins/ecr.py) behaves as registry-kinds.md
# sections 7 and 9 describe: SigV4 is verified on every API call (AWS's own
# test vectors check the algorithm), the AWS JSON 1.1 operations and their
# errors, paging with nextToken/maxResults, Basic AWS:<password> on the
# registry, repositories that must exist before a push, chunked uploads (201,
# parts under 5 MiB refused), a manifest DELETE refused (BatchDeleteImage
# deletes), throttling, token expiry; what is pushed lands
# in the Distribution registry behind it.
set -euo pipefail
source "$(dirname "$0")/../lib/standin.sh"
SIGV4=$ROOT/tests/standins/sigv4.py

while read -r line; do
    [[ $line == ok* ]]; ok $? "SigV4 vector: ${line#* - }"
done < <(python3 "$SIGV4" self-test || true)

standin_start ecr e "$SI_WORK/e"
R=$STANDIN_E_URL API=$STANDIN_E_API_URL UP=$STANDIN_E_UPSTREAM_URL
KEY=$STANDIN_E_ACCESS_KEY_ID SECRET=$STANDIN_E_SECRET_ACCESS_KEY REGION=$STANDIN_E_REGION
# aws TARGET JSON [KEY SECRET SERVICE REGION]: one API call signed by curl's
# own SigV4 (--aws-sigv4, independent of the stand-in's code); STATUS, BODY.
aws() {
    http POST "$API/" --aws-sigv4 "aws:amz:${6:-$REGION}:${5:-ecr}" --user "${3:-$KEY}:${4:-$SECRET}" \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.$1" --data-binary "$2"
}
# aws_py TARGET JSON [sigv4.py options]: the same through tests/standins/sigv4.py.
aws_py() {
    local out
    out=$(python3 "$SIGV4" call "$API/" "$1" "$2" --key "$KEY" --secret "$SECRET" --region "$REGION" "${@:3}")
    STATUS=$(head -n 1 <<<"$out")
    BODY=$(tail -n +2 <<<"$out")
}

# --- SigV4 ------------------------------------------------------------------------------
http POST "$API/" -H 'Content-Type: application/x-amz-json-1.1' \
    -H 'X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeRepositories' -d '{}'
is "$STATUS:$(jb .__type)" 403:MissingAuthenticationTokenException "an unsigned call: 403 MissingAuthenticationTokenException"
aws DescribeRepositories '{}' AKIAUNKNOWNKEY000000
is "$STATUS:$(jb .__type)" 400:UnrecognizedClientException "an unknown access key: UnrecognizedClientException"
aws DescribeRepositories '{}' "$KEY" wrong-secret
is "$STATUS:$(jb .__type)" 403:InvalidSignatureException "a wrong secret: 403 InvalidSignatureException"
like "$(jb .message)" '^The request signature we calculated does not match' "with AWS's message"
aws_py DescribeRepositories '{}'
is "$STATUS" 200 "a call signed by tests/standins/sigv4.py: 200"
aws_py DescribeRepositories '{}' --tamper
is "$STATUS:$(jb .__type)" 403:InvalidSignatureException "a body changed after signing: 403 InvalidSignatureException"
aws DescribeRepositories '{}' "$KEY" "$SECRET" s3
is "$STATUS:$(jb .message)" "403:Credential should be scoped to correct service: 'ecr'." "signed for another service: refused"
aws DescribeRepositories '{}' "$KEY" "$SECRET" ecr eu-west-1
is "$STATUS:$(jb .__type)" 403:InvalidSignatureException "signed for another region: refused"
aws_py DescribeRepositories '{}' --date 20150830T123600Z
like "$STATUS:$(jb .message)" '^403:Signature expired: 20150830T123600Z is now earlier than' "an old X-Amz-Date: Signature expired"
aws DescribeRepositories '{}'
is "$STATUS:$BODY" '200:{"repositories": []}' "a DescribeRepositories signed by curl --aws-sigv4: 200, no repositories yet"
aws NoSuchOperation '{}'
is "$STATUS:$(jb .__type)" 400:UnknownOperationException "an unknown X-Amz-Target: UnknownOperationException"

# --- GetAuthorizationToken and the registry's Basic auth --------------------------------
aws GetAuthorizationToken '{}'
is "$STATUS" 200 "GetAuthorizationToken: 200"
TOK=$(jb '.authorizationData[0].authorizationToken')
like "$(base64 -d <<<"$TOK")" '^AWS:.{40,}$' "the token is base64 of AWS:<password>"
is "$(jb '.authorizationData[0].expiresAt | type')" number "expiresAt is epoch seconds as a number"
(( $(jb '.authorizationData[0].expiresAt') > $(date +%s) )); ok $? "expiresAt lies ahead"
is "$(jb '.authorizationData[0].proxyEndpoint')" "$R" "proxyEndpoint is the registry listener"
aws GetAuthorizationToken '{"registryIds":["12345"]}'
is "$STATUS:$(jb .__type)" 400:InvalidParameterException "registryIds that are not 12 digits: InvalidParameterException"
http GET "$R/v2/"
is "$STATUS:$(hdr www-authenticate)" "401:Basic realm=\"$R/\",service=\"ecr.amazonaws.com\"" \
    "the registry without credentials: 401 Basic realm=<registry>/ service=ecr.amazonaws.com"
http GET "$R/v2/" -u AWS:not-a-token
is "$STATUS" 401 "a password ECR never issued: 401"
RA=(-H "Authorization: Basic $TOK")
http GET "$R/v2/" "${RA[@]}"
is "$STATUS" 200 "Authorization: Basic <authorizationToken as-is>: 200"

# --- repositories ----------------------------------------------------------------------
http POST "$R/v2/team/app/blobs/uploads/" "${RA[@]}"
is "$STATUS:$(jb '.errors[0].code'):$(jb '.errors[0].message')" \
    "404:NAME_UNKNOWN:The repository with name 'team/app' does not exist in the registry with id '123456789012'" \
    "a push before CreateRepository: 404 NAME_UNKNOWN, ECR's message"
standin_control e deny_create=1 >/dev/null
aws CreateRepository '{"repositoryName":"team/app"}'
is "$STATUS:$(jb .__type)" 403:AccessDeniedException "deny_create: 403 AccessDeniedException"
standin_control e deny_create=0 >/dev/null
aws CreateRepository '{"repositoryName":"team/app"}'
is "$STATUS:$(jb .repository.repositoryName):$(jb .repository.registryId)" 200:team/app:123456789012 "CreateRepository: 200"
is "$(jb .repository.repositoryUri):$(jb .repository.repositoryArn)" \
    "${R#http://}/team/app:arn:aws:ecr:us-east-1:123456789012:repository/team/app" "with repositoryUri and repositoryArn"
is "$(jb '.repository.createdAt | type')" number "createdAt is a number"
aws CreateRepository '{"repositoryName":"team/app"}'
is "$STATUS:$(jb .__type)" 400:RepositoryAlreadyExistsException "the same again: RepositoryAlreadyExistsException"
aws CreateRepository '{"repositoryName":"Team/App"}'
is "$STATUS:$(jb .__type)" 400:InvalidParameterException "an invalid name: InvalidParameterException"
for n in team/b team/c team/d; do aws CreateRepository "{\"repositoryName\":\"$n\"}"; done
aws DescribeRepositories '{"maxResults":3}'
is "$(jb '[.repositories[].repositoryName] | join(",")')" "team/app,team/b,team/c" "DescribeRepositories maxResults=3: the first three"
next=$(jb .nextToken)
like "$next" '^[A-Za-z0-9+/=]+$' "and a nextToken"
aws DescribeRepositories "{\"maxResults\":3,\"nextToken\":\"$next\"}"
is "$(jb '[.repositories[].repositoryName] | join(",")'):$(jb .nextToken)" "team/d:null" "the next page: the last one, nextToken null"
aws DescribeRepositories '{"maxResults":0}'
is "$STATUS:$(jb .__type)" 400:InvalidParameterException "maxResults 0: InvalidParameterException"
aws DescribeRepositories '{"repositoryNames":["team/app","nope"]}'
is "$STATUS:$(jb .__type)" 400:RepositoryNotFoundException "repositoryNames with a missing one: RepositoryNotFoundException"

# --- pushes ------------------------------------------------------------------------------
d1=$(standin_push "$R" team/app v1 "${RA[@]}")
d2=$(standin_push "$R" team/app v2 "${RA[@]}")
is "$(curl -s -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/team/app/manifests/v2" |
      tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')" "$d2" "a manifest pushed through the stand-in is in the upstream"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$SI_WORK/big"
head -c 1000 /dev/urandom >"$SI_WORK/small"
loc=$(curl -s -D - -o /dev/null -X POST "${RA[@]}" "$R/v2/team/app/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
http PATCH "$loc" "${RA[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$SI_WORK/small"
is "$STATUS:$(hdr range)" "201:0-999" "a chunked PATCH answers 201 (not 202), with Range"
loc=$(hdr location)
http PATCH "$loc" "${RA[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$SI_WORK/small"
is "$STATUS:$(jb '.errors[0].message')" \
    "400:LayerPartTooSmallException: All layer parts except the last part should be at least 5MB" \
    "a part after one under 5 MiB: 400 LayerPartTooSmall"
cat "$SI_WORK/big" "$SI_WORK/small" >"$SI_WORK/both"
bd=sha256:$(sha256sum "$SI_WORK/both" | cut -d' ' -f1)
loc=$(curl -s -D - -o /dev/null -X POST "${RA[@]}" "$R/v2/team/app/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
http PATCH "$loc" "${RA[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$SI_WORK/big"
is "$STATUS" 201 "a 5 MiB part: 201"
http PATCH "$(hdr location)" "${RA[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$SI_WORK/small"
is "$STATUS" 201 "then a short last part: 201"
http PUT "$(hdr location)&digest=${bd/:/%3A}" "${RA[@]}"
is "$STATUS:$(hdr docker-content-digest)" "201:$bd" "the closing PUT: 201 with the digest"
is "$(curl -s "$UP/v2/team/app/blobs/$bd" | sha256sum | cut -d' ' -f1)" "${bd#sha256:}" "the chunked blob is whole in the upstream"
http GET "$R/v2/_catalog" "${RA[@]}"
is "$(jb '.repositories | join(",")')" team/app "/v2/_catalog works with Basic"

# --- images and deletion -------------------------------------------------------------------
aws ListImages '{"repositoryName":"team/app"}'
is "$(jb '[.imageIds[] | .imageTag + "=" + .imageDigest] | join(",")')" "v1=$d1,v2=$d2" "ListImages: both tags with their digests"
aws ListImages '{"repositoryName":"team/app","maxResults":1}'
is "$(jb '.imageIds | length'):$(jb '.nextToken | type')" 1:string "ListImages pages with maxResults/nextToken"
http DELETE "$R/v2/team/app/manifests/$d1" "${RA[@]}"
is "$STATUS:$(jb '.errors[0].code'):$(curl -s -o /dev/null -w '%{http_code}' -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/team/app/manifests/$d1")" \
    "405:UNSUPPORTED:200" "the registry refuses a manifest DELETE (405 UNSUPPORTED): the image stays"
aws BatchDeleteImage '{"repositoryName":"team/app","imageIds":[{"imageTag":"v1"},{"imageTag":"v9"}]}'
is "$STATUS:$(jb '.imageIds[0].imageTag'):$(jb '.imageIds[0].imageDigest')" "200:v1:$d1" "BatchDeleteImage by tag: deleted"
is "$(jb '.failures[0].imageId.imageTag'):$(jb '.failures[0].failureCode')" v9:ImageNotFound "a missing tag is a failure ImageNotFound"
is "$(curl -s "$UP/v2/team/app/tags/list" | jq -r '.tags | join(",")')" v2 "v1 is gone from the upstream"
is "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$UP/v2/team/app/manifests/$d1")" 404 \
    "and its image too, as that was its last tag"
aws BatchDeleteImage "{\"repositoryName\":\"team/app\",\"imageIds\":[{\"imageDigest\":\"$d2\"}]}"
is "$(jb '.imageIds[0].imageDigest'):$(curl -s "$UP/v2/team/app/tags/list" | jq -r '.tags | length')" "$d2:0" \
    "BatchDeleteImage by digest removes the image and its tags"
aws BatchDeleteImage '{"repositoryName":"nope","imageIds":[{"imageTag":"v1"}]}'
is "$(jb .__type)" RepositoryNotFoundException "BatchDeleteImage in a missing repository: RepositoryNotFoundException"

# --- faults and expiry -----------------------------------------------------------------------
standin_control e fail_next=1 fail_listener=api >/dev/null
aws DescribeRepositories '{}'
is "$STATUS:$(jb .__type):$(jb .message)" "400:ThrottlingException:Rate exceeded" "fail_next on the API: 400 ThrottlingException"
aws DescribeRepositories '{}'
is "$STATUS" 200 "the next call succeeds"
standin_control e fail_next=1 fail_listener=registry status=429 retry_after=3 >/dev/null
http GET "$R/v2/team/app/tags/list" "${RA[@]}"
is "$STATUS:$(hdr retry-after):$(jb '.errors[0].code')" 429:3:TOOMANYREQUESTS "fail_next on the registry: 429 TOOMANYREQUESTS with Retry-After"
standin_control e expire_tokens=1 >/dev/null
http GET "$R/v2/team/app/tags/list" "${RA[@]}"
is "$STATUS:$(jb '.errors[0].message')" "403:Your authorization token has expired. Reauthenticate and try again." \
    "expire_tokens: the registry password stops working (403 DENIED, expired)"
aws GetAuthorizationToken '{}'
http GET "$R/v2/team/app/tags/list" -H "Authorization: Basic $(jb '.authorizationData[0].authorizationToken')"
is "$STATUS" 200 "a new GetAuthorizationToken works"

recs=$(curl -s "$R/_standin/requests")
if grep -q -- "$SECRET\|$(base64 -d <<<"$TOK" | cut -d: -f2)" <<<"$recs"; then leak=1; else leak=0; fi
is "$leak" 0 "neither the secret key nor a registry password appears in the record"
like "$(jq -r '[.[] | select(.listener == "api") | .authorization // empty][0]' <<<"$recs")" '^AWS4-HMAC-SHA256 sha256:[0-9a-f]{16}$' \
    "a SigV4 Authorization is recorded as its scheme and a hash"

done_testing
