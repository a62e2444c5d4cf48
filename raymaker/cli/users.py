"""``raymaker users``: who may call a raymaker API server, with which access key and which permissions
(raymaker's CreateUser, CreateAccessKey, PutUserPolicy, ... : IAM's operations). A secret access key is
printed once, when it is made, and never again."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raymaker.cli.common import Subparsers, clock, get_session, print_table
from raymaker.protocol.iam_policy import ADMINISTRATOR_POLICY, OWN_RESOURCES_POLICY

ADMIN_POLICY_NAME = "AdministratorAccess"
OWN_POLICY_NAME = "OwnResources"


def _print_key(key: dict) -> None:
    print(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}")
    print(f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}")
    print("# the secret is shown this once: store it now (e.g. in ~/.aws/credentials)")


def cmd_create(args: argparse.Namespace) -> int:
    session = get_session(args)
    policy = Path(args.policy).read_text() if args.policy else None  # read before anything is made
    user = session.call("CreateUser", {"UserName": args.name})["User"]
    print(f"created user {user['UserName']} ({user['Arn']})")
    if args.admin:
        session.call("PutUserPolicy", {"UserName": args.name, "PolicyName": ADMIN_POLICY_NAME,
                                       "PolicyDocument": json.dumps(ADMINISTRATOR_POLICY)})
        print(f"attached {ADMIN_POLICY_NAME} (every action on every resource)")
    if policy is not None:
        name = Path(args.policy).stem
        session.call("PutUserPolicy", {"UserName": args.name, "PolicyName": name, "PolicyDocument": policy})
        print(f"attached policy {name}")
    if not args.admin and policy is None:
        session.call("PutUserPolicy", {"UserName": args.name, "PolicyName": OWN_POLICY_NAME,
                                       "PolicyDocument": json.dumps(OWN_RESOURCES_POLICY)})
        print(f"attached {OWN_POLICY_NAME} (everything on what the user makes; others' resources stay unseen)")
    _print_key(session.call("CreateAccessKey", {"UserName": args.name})["AccessKey"])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    session = get_session(args)
    rows, params = [], {}
    while True:
        page = session.call("ListUsers", params)
        for u in page["Users"]:
            keys = session.call("ListAccessKeys", {"UserName": u["UserName"]})["AccessKeyMetadata"]
            policies = session.call("ListUserPolicies", {"UserName": u["UserName"]})["PolicyNames"]
            rows.append([u["UserName"], ",".join(k["AccessKeyId"] for k in keys) or "-",
                         ",".join(policies) or "-", clock(u["CreateDate"])])
        if not page.get("NextToken"):
            break
        params["NextToken"] = page["NextToken"]
    print_table(["USER", "ACCESS KEYS", "POLICIES", "CREATED"], rows)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    get_session(args).call("DeleteUser", {"UserName": args.name})
    print(f"deleted user {args.name}; its access keys no longer sign requests")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    """A new key first, then the old ones go: the user is never without a working key."""
    session = get_session(args)
    old = session.call("ListAccessKeys", {"UserName": args.name})["AccessKeyMetadata"]
    if len(old) > 1:  # room for the new one (two at most)
        oldest = old[0]["AccessKeyId"]
        session.call("DeleteAccessKey", {"UserName": args.name, "AccessKeyId": oldest})
        old = old[1:]
    key = session.call("CreateAccessKey", {"UserName": args.name})["AccessKey"]
    for k in old:
        session.call("DeleteAccessKey", {"UserName": args.name, "AccessKeyId": k["AccessKeyId"]})
    print(f"user {args.name}: new access key; {', '.join(k['AccessKeyId'] for k in old) or 'no old key'} deleted")
    _print_key(key)
    return 0


def cmd_put_policy(args: argparse.Namespace) -> int:
    get_session(args).call("PutUserPolicy", {"UserName": args.name, "PolicyName": args.policy_name,
                                             "PolicyDocument": Path(args.file).read_text()})
    print(f"user {args.name}: policy {args.policy_name} set")
    return 0


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser("users", help="users of a raymaker API server: access keys and permissions",
                       description="Users, access keys and IAM-style policies of a raymaker API server.")
    users = p.add_subparsers(dest="users_command", required=True)
    create = users.add_parser("create", help="a new user and access key (the secret is printed once)")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="allow every action on every resource")
    create.add_argument("--policy", metavar="FILE",
                        help="an IAM policy document (JSON) to attach (default: OwnResources, everything on "
                             "what the user makes)")
    create.set_defaults(func=cmd_create)
    users.add_parser("list", help="users, their access key ids and policies").set_defaults(func=cmd_list)
    delete = users.add_parser("delete", help="a user, its keys and policies")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_delete)
    rotate = users.add_parser("rotate-key", help="a new access key for the user; the old one stops working")
    rotate.add_argument("name")
    rotate.set_defaults(func=cmd_rotate)
    put = users.add_parser("put-policy", help="attach (or replace) an IAM policy document")
    put.add_argument("name")
    put.add_argument("policy_name")
    put.add_argument("file", help="the policy document, JSON (Effect, Action, Resource)")
    put.set_defaults(func=cmd_put_policy)
