"""What is not deployed code: the CloudFormation merged by `make package`, and the local stack (`infra.local`).

Chalice packages app.py and chalicelib/ only, so nothing here reaches a Lambda zip.
"""
