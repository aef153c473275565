#!/usr/bin/env python3
"""A tiny HTTP GET relay that runs inside a network namespace.

Reads one URL per line on stdin, prints {"ev":"http","status":..,"body":..}
(or "error") per line. The tests use it to scrape wspulse's /metrics on the
127.0.0.1 of the proxy's namespace, which the host cannot reach.
"""
import json
import sys
import urllib.error
import urllib.request

for line in sys.stdin:
    url = line.strip()
    if not url:
        continue
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            res = {"ev": "http", "status": r.status, "body": r.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as e:
        res = {"ev": "http", "status": e.code, "body": e.read().decode("utf-8", "replace")}
    except OSError as e:
        res = {"ev": "http", "status": 0, "body": "", "error": str(e)}
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
