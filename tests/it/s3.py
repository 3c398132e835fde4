"""The tests' own S3 client (boto3, from moto's virtualenv): sets up buckets
and reads back what `publish` wrote, independently of the client library
`publish` uses.

    s3.py ENDPOINT create BUCKET        a bucket anyone may read (as Nix 2.34 reads)
    s3.py ENDPOINT list BUCKET          {key: [size, content type]} as JSON
    s3.py ENDPOINT classes BUCKET       {key: storage class} as JSON
    s3.py ENDPOINT download BUCKET DIR  every object into DIR/KEY
    s3.py ENDPOINT put BUCKET KEY FILE  upload FILE
    s3.py ENDPOINT auth on|off          moto checks signatures, or not
"""
import json
import os
import sys
import urllib.request

import boto3

endpoint, command, *args = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")

if command == "create":
    (bucket,) = args
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*",
                       "Action": ["s3:GetObject"],
                       "Resource": [f"arn:aws:s3:::{bucket}/*"]}],
    }))
elif command == "list":
    (bucket,) = args
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            head = s3.head_object(Bucket=bucket, Key=obj["Key"])
            out[obj["Key"]] = [obj["Size"], head["ContentType"]]
    json.dump(out, sys.stdout)
elif command == "classes":
    (bucket,) = args
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["StorageClass"]
    json.dump(out, sys.stdout)
elif command == "download":
    bucket, directory = args
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            path = os.path.join(directory, obj["Key"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, obj["Key"], path)
elif command == "put":
    bucket, key, path = args
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read())
elif command == "auth":
    (state,) = args
    # After this many requests without checking, moto checks every signature.
    count = b"0" if state == "on" else b"1e9"
    urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=count, method="POST",
        headers={"Content-Type": "text/plain"})).read()
else:
    sys.exit(f"s3.py: unknown command {command}")
