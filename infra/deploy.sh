#!/usr/bin/env bash
# Deploy a packaged stage of Relais to AWS eu-west-3 (Paris): `make deploy STAGE=prod`, which packages first.
# Needs the AWS CLI v2 and credentials of the target account (an administrator or a deploy role); see docs/deploy.md.
#
# What it does, in order:
#   1. checks that build/package holds the template of STAGE (make package STAGE=...);
#   2. account-level settings that no stack can hold (idempotent):
#      - SNS SMS: DefaultSMSType=Transactional, MonthlySpendLimit (USD), DefaultSenderID;
#      - API Gateway: the account's CloudWatch Logs role, needed for the stage's access logs;
#   3. uploads deployment.zip to the artifact bucket (aws cloudformation package);
#   4. creates or updates the stack relais-STAGE (aws cloudformation deploy) and protects it from deletion;
#   5. prints the stack's outputs (EndpointURL, table and queue names...).
#
# Settings (environment variables; none of them is a secret):
#   RELAIS_ARTIFACT_BUCKET   required  S3 bucket in eu-west-3 for the code (versioned, encrypted, private)
#   PUBLIC_BASE_URL          required  https://… base of the result page links sent to patients
#   NATIONAL_URL             required  https://… FHIR endpoint of the national system
#   EMAIL_SENDER             required  From address of patient e-mails (address or domain verified in SES)
#   NATIONAL_TOKEN_PARAMETER optional  SSM SecureString name of the national token (default /relais/STAGE/national-token)
#   NATIONAL_CLIENT_CERT_SECRET_ARN optional  Secrets Manager ARN {cert_pem, key_pem} for mutual TLS (default none)
#   ALLOWED_AUTHORITIES      required in prod  comma-separated host names of the API that pharmacies sign as
#                                     @authority (elsewhere optional, default: any)
#   SMS_SENDER_ID            optional  alphanumeric SMS sender id (default Relais)
#   SMS_MONTHLY_SPEND_LIMIT_USD optional  SNS MonthlySpendLimit (default 100; above the account quota, ask AWS Support)
#   OPERATOR_EMAIL           optional  subscribed to the operator alarm topic (confirm the e-mail AWS sends)
set -euo pipefail

STAGE="${1:?usage: infra/deploy.sh STAGE}"
cd "$(dirname "$0")/.."
export AWS_REGION=eu-west-3 AWS_DEFAULT_REGION=eu-west-3
STACK="relais-${STAGE}"
PACKAGE=build/package
TEMPLATE="${PACKAGE}/sam.json"

fail() { echo "deploy: $*" >&2; exit 1; }

command -v aws >/dev/null || fail "the AWS CLI (v2) is needed: https://docs.aws.amazon.com/cli/"
[[ -f "${TEMPLATE}" && -f "${PACKAGE}/deployment.zip" ]] || fail "no package in ${PACKAGE}: make package STAGE=${STAGE}"
packaged_stage="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Parameters"]["Stage"]["Default"])' "${TEMPLATE}")"
[[ "${packaged_stage}" == "${STAGE}" ]] || fail "${TEMPLATE} is stage ${packaged_stage}, not ${STAGE}: make package STAGE=${STAGE}"

: "${RELAIS_ARTIFACT_BUCKET:?set RELAIS_ARTIFACT_BUCKET (S3 bucket for the code, in eu-west-3)}"
: "${PUBLIC_BASE_URL:?set PUBLIC_BASE_URL (https://… base of the result links sent to patients)}"
: "${NATIONAL_URL:?set NATIONAL_URL (https://… FHIR endpoint of the national system)}"
: "${EMAIL_SENDER:?set EMAIL_SENDER (From address of patient e-mails, verified in SES)}"
# The same check as the API's at start (chalicelib/config.py) and the template's Rules, before anything is uploaded.
check_authorities='import sys
from chalicelib.config import SettingsError, check_authorities
try:
    check_authorities(*sys.argv[1:])
except SettingsError as error:
    sys.exit(str(error))'
authorities_error="$(python3 -c "${check_authorities}" "${STAGE}" "${ALLOWED_AUTHORITIES:-}" 2>&1)" \
  || fail "${authorities_error} (docs/deploy.md)"
SMS_LIMIT="${SMS_MONTHLY_SPEND_LIMIT_USD:-100}"
SMS_SENDER="${SMS_SENDER_ID:-Relais}"
[[ "${SMS_LIMIT}" =~ ^[0-9]+$ ]] || fail "SMS_MONTHLY_SPEND_LIMIT_USD must be a whole number of USD"

account="$(aws sts get-caller-identity --query Account --output text)"
echo "deploy: stack ${STACK} to account ${account}, region ${AWS_REGION}"

# -- 2. account-level settings -------------------------------------------------------------------------------
# SNS SMS attributes belong to the account and region, not to a stack: transactional (delivery over cost), with a
# monthly cap past which SNS stops sending (the SmsSpend alarm warns at 80 %).
echo "deploy: SNS SMS attributes (Transactional, MonthlySpendLimit ${SMS_LIMIT} USD, sender ${SMS_SENDER})"
aws sns set-sms-attributes --attributes \
  "DefaultSMSType=Transactional,MonthlySpendLimit=${SMS_LIMIT},DefaultSenderID=${SMS_SENDER}"

# API Gateway writes access logs with one role per account and region.
logs_role="$(aws apigateway get-account --query cloudwatchRoleArn --output text 2>/dev/null || true)"
if [[ -z "${logs_role}" || "${logs_role}" == "None" ]]; then
  role_name="relais-apigateway-cloudwatch"
  echo "deploy: API Gateway has no CloudWatch Logs role in this account: creating ${role_name}"
  trust='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"apigateway.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
  if ! logs_role="$(aws iam get-role --role-name "${role_name}" --query Role.Arn --output text 2>/dev/null)"; then
    logs_role="$(aws iam create-role --role-name "${role_name}" --assume-role-policy-document "${trust}" \
      --query Role.Arn --output text)"
    aws iam attach-role-policy --role-name "${role_name}" \
      --policy-arn arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs
    sleep 10  # IAM propagation before API Gateway checks the role
  fi
  aws apigateway update-account --patch-operations "op=replace,path=/cloudwatchRoleArn,value=${logs_role}" >/dev/null
fi

# -- 3. code to S3 ----------------------------------------------------------------------------------------------
echo "deploy: uploading the code to s3://${RELAIS_ARTIFACT_BUCKET}/relais/${STAGE}/"
aws cloudformation package --use-json \
  --template-file "${TEMPLATE}" \
  --s3-bucket "${RELAIS_ARTIFACT_BUCKET}" --s3-prefix "relais/${STAGE}" \
  --output-template-file "${PACKAGE}/packaged.json" >/dev/null

# -- 4. the stack -----------------------------------------------------------------------------------------------
parameters=(
  "Stage=${STAGE}"
  "PublicBaseUrl=${PUBLIC_BASE_URL}"
  "NationalUrl=${NATIONAL_URL}"
  "EmailSender=${EMAIL_SENDER}"
  "NationalTokenParameter=${NATIONAL_TOKEN_PARAMETER:-/relais/${STAGE}/national-token}"
  "NationalClientCertSecretArn=${NATIONAL_CLIENT_CERT_SECRET_ARN:-}"
  "AllowedAuthorities=${ALLOWED_AUTHORITIES:-}"
  "SmsSenderId=${SMS_SENDER}"
  "SmsSpendAlarmThresholdUsd=$(( SMS_LIMIT * 80 / 100 > 0 ? SMS_LIMIT * 80 / 100 : 1 ))"
  "OperatorEmail=${OPERATOR_EMAIL:-}"
)
echo "deploy: creating or updating ${STACK} (a few minutes on the first run)"
aws cloudformation deploy \
  --template-file "${PACKAGE}/packaged.json" \
  --stack-name "${STACK}" \
  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
  --parameter-overrides "${parameters[@]}" \
  --tags "app=relais" "stage=${STAGE}" \
  --no-fail-on-empty-changeset
aws cloudformation update-termination-protection --enable-termination-protection --stack-name "${STACK}" >/dev/null

# -- 5. outputs -------------------------------------------------------------------------------------------------
aws cloudformation describe-stacks --stack-name "${STACK}" \
  --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output table
echo "deploy: done. Next: docs/deploy.md, 'After the first deploy'."
