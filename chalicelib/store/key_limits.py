"""How long caller text may be where it becomes part of a DynamoDB key.

DynamoDB caps a partition key at 2,048 bytes and a sort key at 1,024. A model's name is its row's key and
part of its usage counters' sort key (`<hour>#<api key id>#<model>`): bounded in characters for people and in
UTF-8 bytes for DynamoDB (256 four-byte characters would be 1 KiB), with room left for the rest of the key.
"""

MODEL_NAME_MAX_LENGTH = 256
MODEL_NAME_MAX_BYTES = 512
