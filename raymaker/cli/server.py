"""``raymaker server``: SageMaker's API over HTTP(S) for a team, on the node that holds the job database
(the Ray head). Unchanged boto3 code reaches it with ``endpoint_url`` or ``AWS_ENDPOINT_URL_SAGEMAKER``;
every request is signed with a user's access key (``raymaker users create``)."""

from __future__ import annotations

import argparse

from raymaker.cli.common import Subparsers


def cmd_server(args: argparse.Namespace) -> int:
    # The server hosts the engine: imported here, so the rest of the CLI stays a client of the SDK.
    from raymaker.server.run import make_server

    server = make_server(args.host, args.port, auth=not args.no_auth, certfile=args.certfile,
                         keyfile=args.keyfile, console=not args.no_console)
    scheme = "https" if args.certfile else "http"
    print(f"raymaker API on {scheme}://{args.host}:{args.port} (signed requests: {'off' if args.no_auth else 'on'})",
          flush=True)
    if not args.no_console:
        sign_in = "no sign-in" if args.no_auth else "sign in with an access key"
        print(f"web console on {scheme}://{args.host}:{args.port}/console/ ({sign_in})", flush=True)
    server.run()
    return 0


def add_commands(sub: Subparsers) -> None:
    from raymaker.server.run import DEFAULT_PORT

    p = sub.add_parser("server", help="serve SageMaker's API over HTTP(S) to boto3 and the SDK, and the web console",
                       description="SageMaker's JSON 1.1 API for boto3's sagemaker client and raymaker's SDK, "
                                   "with SigV4-signed requests and IAM-style permissions, and a read-only web "
                                   "console under /console/ behind the same keys and permissions.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--certfile", help="TLS certificate (PEM): serve HTTPS")
    p.add_argument("--keyfile", help="the certificate's private key (PEM)")
    p.add_argument("--no-auth", action="store_true",
                   help="take unsigned requests (only on a loopback address: one machine, one user)")
    p.add_argument("--no-console", action="store_true",
                   help="do not serve the read-only web console under /console/")
    p.set_defaults(func=cmd_server)
