"""The chat data plane: `POST /v1/chat/completions`, authenticated, rate-limited, relayed, metered."""
