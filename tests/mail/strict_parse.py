#!/usr/bin/python3
"""Parses RFC 5322 messages with Python's email package under email.policy.strict.

Usage: strict_parse.py FILE...  Prints one JSON object per file (a JSON list): its headers in
order (name and decoded value), and its parts (content type, charset, decoded content). Any
defect the strict policy finds, while parsing or while decoding a header or a part, is an error:
the script then prints the file and the defect to stderr and exits 1.
"""
import email
import email.policy
import json
import sys


def parse(path):
    with open(path, "rb") as f:
        data = f.read()
    msg = email.message_from_bytes(data, policy=email.policy.strict)
    headers = []
    for name, value in msg.items():
        # Header objects are parsed lazily; str() parses them (and raises on defects).
        headers.append([name, str(value)])
        if name.lower() in ("from", "to", "reply-to"):
            addresses = [[a.display_name, a.addr_spec] for a in value.addresses]
            headers[-1].append(addresses)
    if msg.defects:
        raise ValueError(f"defects: {msg.defects}")
    parts = []
    for part in msg.walk():
        if part.defects:
            raise ValueError(f"part defects: {part.defects}")
        if part.is_multipart():
            parts.append({"type": part.get_content_type(), "headers": [[n, str(v)] for n, v in part.items()]})
            continue
        parts.append({
            "type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "headers": [[n, str(v)] for n, v in part.items()],
            "content": part.get_content(),
        })
    return {"headers": headers, "parts": parts}


def main():
    out = []
    for path in sys.argv[1:]:
        try:
            out.append(parse(path))
        except Exception as e:  # noqa: BLE001 -- every defect is a failure, reported with its file
            print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
    json.dump(out, sys.stdout)


main()
