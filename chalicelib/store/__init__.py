"""Data access: PynamoDB tables and the few DynamoDB patterns built on them."""
