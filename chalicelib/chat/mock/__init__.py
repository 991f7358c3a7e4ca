"""The mock replica's answers, shaped as vLLM's: what the chat function answers when
MOCK_LLM=true, and what the local stack's mock replica serves. Standard library only."""
