"""Event type names: the ExisOne document's dotted names, and the project's own in the same form.

Webhook endpoints subscribe to these names (or `*`); `ALL` lists every type that may be emitted.
"""

from __future__ import annotations

# The ExisOne webhook document's events.
LICENSE_CREATED = "license.created"
LICENSE_ACTIVATED = "license.activated"
LICENSE_EXPIRED = "license.expired"
LICENSE_VALIDATION_FAILED = "license.validation.failed"
LICENSE_REVOKED = "license.revoked"
DEVICE_DEACTIVATED = "device.deactivated"
API_LICENSE_CREATED = "api.license.created"
API_LICENSE_REVOKED = "api.license.revoked"

# The project's own.
LICENSE_EXPIRING = "license.expiring"            # a renewal reminder was due (N days before expiry)
LEASE_OBTAINED = "lease.obtained"
LEASE_RENEWED = "lease.renewed"
LEASE_RELEASED = "lease.released"
LEASE_EXPIRED = "lease.expired"
API_QUOTA_NEAR_LIMIT = "api.quota.near_limit"
API_QUOTA_EXHAUSTED = "api.quota.exhausted"
TICKET_CREATED = "ticket.created"
TICKET_REPLIED = "ticket.replied"
TICKET_RESOLVED = "ticket.resolved"
PAYMENT_UNFULFILLED = "payment.unfulfilled"     # a paid purchase delivered no license (no mapping, no line items)
WEBHOOK_PING = "webhook.ping"                    # only sent by the test ping, to one endpoint

ALL: tuple[str, ...] = (
    LICENSE_CREATED, LICENSE_ACTIVATED, LICENSE_EXPIRED, LICENSE_VALIDATION_FAILED, LICENSE_REVOKED,
    DEVICE_DEACTIVATED, API_LICENSE_CREATED, API_LICENSE_REVOKED, LICENSE_EXPIRING, LEASE_OBTAINED,
    LEASE_RENEWED, LEASE_RELEASED, LEASE_EXPIRED, API_QUOTA_NEAR_LIMIT, API_QUOTA_EXHAUSTED, TICKET_CREATED,
    TICKET_REPLIED, TICKET_RESOLVED, PAYMENT_UNFULFILLED,
)
