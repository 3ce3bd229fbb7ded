"""`cluster.tls.TLSInfo` credentials on a loopback gRPC server: the client certificate's CN
reaches services as auth_context()["x509_common_name"] (what auth takes as the user name with
--client-cert-auth), and a client without a certificate never reaches the service."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cluster.tls import TLSInfo

METHOD = "/test.Echo/CommonName"


async def _serve_and_call(server_tls: TLSInfo, client_tls: TLSInfo) -> bytes:
    async def common_name(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b",".join(context.auth_context().get("x509_common_name", []))

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "CommonName": grpc.unary_unary_rpc_method_handler(common_name)})
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", server_tls.server_credentials())
    await server.start()
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", client_tls.channel_credentials()) as ch:
            return await ch.unary_unary(METHOD)(b"", timeout=20)
    finally:
        await server.stop(None)


def test_client_certificate_common_name_reaches_the_service(pki):
    server = TLSInfo(pki.server.cert, pki.server.key, pki.ca.cert, client_cert_auth=True)
    client = TLSInfo(pki.client.cert, pki.client.key, pki.ca.cert)
    assert asyncio.run(_serve_and_call(server, client)) == b"root"


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_client_without_a_trusted_certificate_is_refused(pki, who):
    server = TLSInfo(pki.server.cert, pki.server.key, pki.ca.cert, client_cert_auth=True)
    client = (TLSInfo(trusted_ca_file=pki.ca.cert) if who == "no certificate"
              else TLSInfo(pki.other_client.cert, pki.other_client.key, pki.ca.cert))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(_serve_and_call(server, client))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
