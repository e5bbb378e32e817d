"""``groundkey keys``: CURVE key pairs, the reference key-delivery client, a standalone server.

groundkey keys keygen --dir DIR NAME
groundkey keys get --endpoint URL --server-key FILE --client-key FILE --bytes N
groundkey keys serve --state-dir DIR --bind URL --server-key FILE --allow-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from groundkey_daemon.errors import UserError


def register(sub: Any) -> None:
    parser = sub.add_parser("keys", help="key delivery: keygen, get, serve")
    actions = parser.add_subparsers(dest="keys_command", required=True)

    keygen = actions.add_parser("keygen", help="create a CURVE key pair (secret file 0600)")
    keygen.add_argument("--dir", type=Path, required=True, help="output directory")
    keygen.add_argument("name", help="file stem: NAME.key and NAME.key_secret")
    keygen.set_defaults(run=run_keygen)

    get = actions.add_parser("get", help="fetch key material from a delivery server")
    get.add_argument("--endpoint", required=True, help="e.g. tcp://127.0.0.1:5560")
    get.add_argument("--server-key", type=Path, required=True, help="server's NAME.key")
    get.add_argument("--client-key", type=Path, required=True, help="our NAME.key_secret")
    get.add_argument("--bytes", type=int, required=True, help="at least this many bytes")
    get.add_argument("--request-id", default=None, help="repeat one to retry a lost reply")
    get.add_argument("--no-ack", action="store_true", help="do not acknowledge (keys stay held)")
    get.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    get.set_defaults(run=run_get)

    serve = actions.add_parser("serve", help="serve keys from a state directory's key store")
    serve.add_argument("--state-dir", type=Path, required=True)
    serve.add_argument("--bind", default="tcp://127.0.0.1:5560")
    serve.add_argument("--server-key", type=Path, required=True, help="server's NAME.key_secret")
    serve.add_argument("--allow-dir", type=Path, required=True, help="allowed consumers' *.key")
    serve.add_argument("--key-size-bytes", type=int, default=32)
    serve.add_argument(
        "--reservation-ttl", type=float, default=86400.0, help="seconds before unacked keys expire"
    )
    serve.set_defaults(run=run_serve)


def run_keygen(args: argparse.Namespace) -> int:
    from groundkey_daemon.delivery import create_key_pair

    public, secret = create_key_pair(args.dir, args.name)
    print(public)
    print(secret)
    return 0


def run_get(args: argparse.Namespace) -> int:
    from groundkey_daemon.delivery import (
        DeliveryClient,
        DeliveryError,
        load_public_key,
    )

    if args.bytes < 1:
        raise UserError("--bytes must be positive")
    for path in (args.server_key, args.client_key):
        if not path.is_file():
            raise UserError(f"{path}: no such key file")
    request_id = args.request_id or str(uuid.uuid4())

    async def main() -> dict[str, Any]:
        client = DeliveryClient(
            args.endpoint,
            server_public_key=load_public_key(args.server_key),
            client_secret_key_file=args.client_key,
            timeout_s=args.timeout,
        )
        async with client:
            keys = await client.get(args.bytes, request_id)
            doc: dict[str, Any] = {
                "request_id": request_id,
                "keys": [{"key_ID": k.key_ID, "key": k.key} for k in keys],
            }
            # Print before acknowledging: once acked, the server has erased its copy.
            print(json.dumps(doc), flush=True)
            if not args.no_ack:
                await client.ack(request_id)
            return doc

    try:
        asyncio.run(main())
    except DeliveryError as exc:
        print(f"groundkey keys get: {exc} (request {request_id})", file=sys.stderr)
        return 1
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from groundkey_daemon.delivery import DeliveryServer
    from groundkey_daemon.keystore import KeyStore
    from groundkey_daemon.sdnotify import notify

    async def main() -> None:
        async with KeyStore(args.state_dir, key_size_bytes=args.key_size_bytes) as store:
            server = DeliveryServer(
                store,
                bind=args.bind,
                server_secret_key_file=args.server_key,
                allow_dir=args.allow_dir,
            )
            try:
                endpoint = await server.start()
                print(endpoint, flush=True)
                notify(f"READY=1\nSTATUS=serving keys on {endpoint}")
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(server.serve(), name="delivery")
                    tg.create_task(server.expire_loop(args.reservation_ttl), name="expire")
            finally:
                await server.close()

    try:
        asyncio.run(main())
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return 0
