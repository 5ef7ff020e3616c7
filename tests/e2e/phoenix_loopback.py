"""``phoenix serve`` with its OTLP gRPC server on 127.0.0.1 (Phoenix binds it to ``[::]``, every
interface, whatever PHOENIX_HOST says; tests may only listen on loopback)."""

import sys

import grpc.aio._server as grpc_server

_add_insecure_port = grpc_server.Server.add_insecure_port


def _loopback_only(self, address):
    if address.startswith("[::]:"):
        address = "127.0.0.1:" + address[len("[::]:") :]
    return _add_insecure_port(self, address)


grpc_server.Server.add_insecure_port = _loopback_only

from phoenix.server.main import main  # noqa: E402

sys.argv = ["phoenix", "serve", *sys.argv[1:]]
main()
