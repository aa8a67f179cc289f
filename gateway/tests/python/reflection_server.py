#!/usr/bin/env python3
"""A Python grpcio server that describes the services of a FileDescriptorSet through grpcio-reflection (v1alpha,
as grpcio serves it) and implements none of them: another implementation's reflection, for the gateway's tests.

    reflection_server.py DESCRIPTOR_SET SERVICE [SERVICE...]

Prints the port it listens on (127.0.0.1, chosen by the system), then serves until stdin closes.
"""
import sys
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection

files = descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], "rb").read()).file
pool = descriptor_pool.Default()
for file in files:
    if file.name.startswith("google/protobuf/"):
        continue  # the well-known types are in the default pool already
    pool.Add(file)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
reflection.enable_server_reflection(sys.argv[2:] + [reflection.SERVICE_NAME], server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
