"""Webhook alerts: findings grouped per (kind, host, GPU) and sent to chat services
(Slack and compatible, Discord, Microsoft Teams Workflows) or any HTTP receiver (generic
JSON, HMAC-signed), through a persistent outbox in the DuckDB file.

Modules: ``formats`` (payloads, pure), ``grouping`` (which findings make which messages,
pure), ``outbox`` (the persistent queue and backoff), ``sender`` (one HTTP attempt, the
signature and redaction), ``component`` (the daemon component wiring them together).
"""
from infersight.daemon.alerts.component import AlertsComponent

__all__ = ["AlertsComponent"]
