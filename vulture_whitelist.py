"""Names the dead-code check (``make lint``: vulture) would report as unused, and why they stay.

Vulture reads this file as code that uses these names; nothing imports or runs it. Chalice's route and event
decorators are ignored on the command line (``--ignore-decorators``), so a new route or handler needs no line here.
A line belongs here only when something vulture cannot see calls the name: a framework, the standard library, a
name given as a string, or the tests (which the check does not scan, or every pytest fixture would be reported).
"""

from typing import Any

_: Any = None

# --- called by a framework or the standard library --------------------------------------------------------------

# PynamoDB reads these from a model's ``Meta`` and an index's ``Meta`` (chalicelib/adapters/tables.py).
_.max_retry_attempts
_.connect_timeout_seconds
_.read_timeout_seconds
_.index_name
_.projection

# http-message-signatures calls these on its key resolver / verifier (chalicelib/services/authn.py), with these
# parameters whether the override reads them or not.
_.resolve_public_key
_.resolve_private_key
_.validate_created_and_expires
_.max_age
_.sig_input

# Chalice calls ``Blueprint.register(app, options)`` (chalicelib/routes/methods.py).
_.options

# Chalice's local server and reloader, overridden to watch the sources (infra/local/api.py).
_._seed_mtime_cache
_._recursive_walk_files
_._start_file_watcher
_.worker_process_cls

# http.server / socketserver hooks and settings (infra/local/national.py).
_.daemon_threads
_.allow_reuse_address
_.handle_error
_.server_version
_.protocol_version
_.do_POST
_.do_GET
_.do_DELETE
_.do_PATCH
_.close_connection
_.log_request
_.log_error
_.format

# Signal handlers take ``(signum, frame)`` (infra/local/*.py).
_.frame

# Lambda's context object, read by handlers and Powertools (infra/local/poller.py).
_.function_version
_.invoked_function_arn
_.memory_limit_in_mb
_.log_group_name
_.log_stream_name
_.get_remaining_time_in_millis

# zipfile.ZipInfo attributes that make the package reproducible (infra/package.py).
_.external_attr
_.compress_type

# Transports of the channel table, called by name (chalicelib/domain/channels.py, services/notify.py).
_.send_sms

# --- used by the tests only --------------------------------------------------------------------------------------

_.override  # chalicelib/bootstrap.py: tests swap dependencies
_.patch_moto  # infra/local/moto_patches.py: tests/conftest.py
_.serve  # infra/local/national.py: the stand-in national system, started by tests
_.run_schedules_once  # infra/local/poller.py
_.specs  # infra/local/poller.py: Wiring.specs, the wiring test compares it with app.event_sources
_.schedule_periods  # infra/local/poller.py: the wiring test compares it with the template
_.deleted  # infra/local/poller.py: QueueBatch counters, read by tests
_.raised
_.load_template  # infra/provision.py: tests/integration/test_template_matches_code.py
_.month_count  # chalicelib/adapters/pacing.py: Slot.month_count, read by tests/integration/test_pacing.py

# --- dead, in files another branch is changing: remove these lines with the code --------------------------------

# --- the local AWS and the local API (infra/local): names their frameworks read ---------------------------------

_.request_queue_size  # infra/local/api.py: socketserver's listen backlog, read by http.server
_._old_receipt_handles  # infra/local/moto_sqs.py: moto's Message reads it to list a message's receipt handles
_.get_headers  # infra/local/throttling.py: werkzeug's HTTPException API, called when moto answers the error
_.injected  # infra/local/faults.py: faults for a block of a test (used by the tests only)
_.enforced  # infra/local/local_iam.py: the IAM check for a block (tests/conftest.py `aws`)
_.running_as  # infra/local/local_iam.py: a test's step inside another function's handler runs as that function
_.disable_nagle_algorithm  # infra/local/api.py, national.py: read by http.server's StreamRequestHandler.setup

# --- the paper slip (chalicelib/adapters/slip_pdf.py): fpdf2 settings it reads when writing the PDF -------------

_.core_fonts_encoding  # the core font's encoding (Windows-1252: French accents)
_.viewer_preferences  # DisplayDocTitle: a reader shows the title, not the file name

# --- receipts: run by name (a child process's code string) when the local stack starts (infra/local/stack.py) ------

_.ensure_key  # the stage's first receipt key, so that its JWKS is never empty

# --- the local API: chalice local methods replaced by what API Gateway does (infra/local/api.py) --------------------

_._is_binary  # every request body handed over base64-encoded, as with binary media types */*
