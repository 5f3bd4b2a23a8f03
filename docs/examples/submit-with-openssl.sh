#!/usr/bin/env bash
# Submit one test result to Relais, signed with nothing but openssl (3.0 or later) and curl.
#
#   docs/examples/submit-with-openssl.sh KEY_ID PRIVATE_KEY_PEM BODY_FILE [API_URL]
#
# KEY_ID           the key id the operators gave you (relais pharmacy add)
# PRIVATE_KEY_PEM  your Ed25519 private key (openssl genpkey -algorithm ed25519 -out pharmacy.key.pem)
# BODY_FILE        the JSON document to submit, sent byte for byte as it is in the file
# API_URL          default http://127.0.0.1:8000 (the local stack of `make run`)
#
# Prints the signature base it signed on stderr, then Relais' answer on stdout: the HTTP status on the first line,
# the JSON body on the next. Exits 0 on 2xx, 1 otherwise. See docs/api.md, "Signing a request".
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
  echo "usage: $0 KEY_ID PRIVATE_KEY_PEM BODY_FILE [API_URL]" >&2
  exit 2
fi
key_id=$1
private_key=$2
body_file=$3
api_url=${4:-http://127.0.0.1:8000}
api_url=${api_url%/}

# "@authority": the host (and port, when the URL has one) the request is sent to, in lower case.
authority=$(printf '%s' "$api_url" | sed -E 's#^[A-Za-z]+://##; s#/.*$##' | tr '[:upper:]' '[:lower:]')
# "@path": the path of the URL as sent.
path="$(printf '%s' "$api_url" | sed -E 's#^[A-Za-z]+://[^/]*##')/v1/results"

# Content-Digest (RFC 9530): SHA-256 of the exact body bytes, base64, between colons.
digest="sha-256=:$(openssl dgst -sha256 -binary "$body_file" | openssl base64 -A):"
created=$(date +%s)
# 18 random bytes: 24 base64url characters (16 to 128 are accepted, never twice with one key).
nonce=$(openssl rand -base64 18 | tr '+/' '-_')
params="(\"@method\" \"@authority\" \"@path\" \"content-digest\" \"content-type\");created=${created};keyid=\"${key_id}\";alg=\"ed25519\";nonce=\"${nonce}\""

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The signature base (RFC 9421 section 2.5): one line per covered component, then @signature-params; no final newline.
printf '"@method": POST\n"@authority": %s\n"@path": %s\n"content-digest": %s\n"content-type": application/json\n"@signature-params": %s' \
  "$authority" "$path" "$digest" "$params" >"$work/base"
signature=$(openssl pkeyutl -sign -inkey "$private_key" -rawin -in "$work/base" | openssl base64 -A)

{
  echo "signature base:"
  cat "$work/base"
  echo
} >&2

status=$(curl --silent --show-error --output "$work/answer" --write-out '%{http_code}' \
  -X POST "${api_url}/v1/results" \
  -H "Content-Type: application/json" \
  -H "Content-Digest: ${digest}" \
  -H "Signature-Input: sig1=${params}" \
  -H "Signature: sig1=:${signature}:" \
  --data-binary "@${body_file}")
echo "$status"
cat "$work/answer"
echo
[[ $status == 2?? ]]
