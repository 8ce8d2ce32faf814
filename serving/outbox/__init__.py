"""Events to the membership platform: a transactional outbox, delivered by signed webhooks.

`events` records an event in the transaction of its cause; `delivery` POSTs due events to the
configured webhooks (`config`), signed (`signing`), with retries and dead letters; `admin`
reports on them and sends dead letters again.
"""
