"""Set up etcd RBAC for the tests, through aetcd's gRPC stubs (no etcdctl):
run as a script, so it works inside a lab host's netns too.

    python etcd_auth.py TARGET SPEC.json

SPEC: {"ca", "cert", "key": PEM paths (TLS) or null,
       "setup": {"root": PW, "users": {NAME: [PW, PREFIX]}} (then auth enable)
       | "passwd": [NAME, NEW_PW] (as root: {"root": PW})}

The same steps as docs/security.md's etcdctl commands: a root user with
the root role, one role per user with readwrite on its prefix, auth on.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
from aetcd import rpc


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


async def main(target: str, spec: dict[str, Any]) -> None:
    if spec.get("ca"):
        def read(p: str | None) -> bytes | None:
            return open(p, "rb").read() if p else None  # noqa: SIM115

        creds = grpc.ssl_channel_credentials(read(spec["ca"]), read(spec.get("key")),
                                             read(spec.get("cert")))
        channel = grpc.aio.secure_channel(target, creds)
    else:
        channel = grpc.aio.insecure_channel(target)
    auth = rpc.AuthStub(channel)
    try:
        if "setup" in spec:
            s = spec["setup"]
            await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=s["root"]))
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
            for name, (password, prefix) in s["users"].items():
                key = prefix.encode()
                await auth.RoleAdd(rpc.AuthRoleAddRequest(name=name))
                await auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
                    name=name, perm=rpc.Permission(permType=rpc.Permission.READWRITE,
                                                   key=key, range_end=_range_end(key))))
                await auth.UserAdd(rpc.AuthUserAddRequest(name=name, password=password))
                await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=name, role=name))
            await auth.AuthEnable(rpc.AuthEnableRequest())
        else:
            token = (await auth.Authenticate(rpc.AuthenticateRequest(
                name="root", password=spec["root"]))).token
            name, password = spec["passwd"]
            await auth.UserChangePassword(
                rpc.AuthUserChangePasswordRequest(name=name, password=password),
                metadata=(("token", token),))
    finally:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
