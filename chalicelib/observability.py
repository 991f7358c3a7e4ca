"""One structured logger for the service. Never log a key, a prompt or an answer."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="hyperstack-llm-proxy")
METRICS_NAMESPACE = "HyperstackLlmProxy"  # CloudWatch metrics, emitted as embedded metric format log lines
