"""The one place that signs what mediagate sends to the application (webhooks and hooks):
Standard Webhooks headers with the MEDIAGATE_WEBHOOK_SECRET."""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


class Signer:
    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, message_id: str, body: str) -> dict[str, str]:
        sent_at = datetime.now(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, sent_at, body),
        }
