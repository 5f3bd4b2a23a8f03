"""Event handlers: the outbox relay and audit chain (DynamoDB streams), the queue consumers, the schedules.

Each source is declared once, by the Chalice decorator of its handler (``on_dynamodb_record``, ``on_sqs_message``,
``schedule``): Chalice lists them in ``app.event_sources``, ``chalice package`` wires them in AWS and
``infra/local/poller.py`` reads that same list to drive the same handlers in the local stack.

Every handler takes Lambda's ``(event, context)``: the decorated function receives Chalice's event object and calls
the plain handler beside it with ``event.to_dict()`` and ``event.context`` (tests call the plain handlers directly).
The queue consumers share :func:`chalicelib.events.batch.consume_batch` and the message format of
:mod:`chalicelib.domain.queue_messages`.
"""
