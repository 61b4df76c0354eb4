"""Random request fuzz of `srfeat serve`: one server, started as a user starts it (with small limits), is sent
requests drawn at random from its routes (the right method mostly, another sometimes), each query a mix of valid
values, hostile ones (empty, huge, negative, NaN, not UTF-8, control characters, 300 characters) and parameters
missing, repeated or unknown; uploads of small PNG and JPEG images, damaged ones, text, nothing, a file past
--max-upload-mb and one past --max-megapixels; and headers a page would not send (no upload header, a form's type,
a Range, another Host or Origin). Job ids come from the uploads that were taken, so that images, again, remove and
the results' zip are asked of real jobs too. Every answer is classed against the rules for a server of untrusted
clients: no 5xx but 503 (a full queue), an error from the API is one line of JSON, an answer comes (no hang), the
server logs no traceback and stays up, and at the end it stops on SIGTERM with exit code 0 and nothing left in its
temporary folder.

    PYTHONPATH=. python3 scripts/fuzz_web.py /tmp/webfuzz --requests 2000 --seed 1    # about 5 minutes

Results go to FOLDER/results.jsonl (one JSON object a request: what was sent, the status, classes), the server's log
to FOLDER/server.log, the findings (classes in capitals) and counts to stdout.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scripts.fuzzing import breaks_rules

SESSIONS = ["s1", "s2", "fuzz-3"]
HOSTILE = ["", "-1", "0", "1e309", "nan", "inf", "9" * 40, "x" * 300, "%FF%FE", "%00", "a%0Ab", "é", "..%2F..", " 1"]
# values a page may send (names are made safe by the server, not refused)
VALID = {
    "session": SESSIONS,
    "name": ["photo.png", "photo.jpg", "a.PNG", ".png", "../../x.png", "名前.png", "CON", "x" * 300 + ".png"],
    "model": ["default", "gan"],
    "strength": ["0", "0.25", "0.5", "1"],
    "ref": ["r1", "r2"],
    "page": ["p1", "p2"],
    "since": ["0", "1", "5"],
    "hidden": ["1", "0"],
    "bytes": ["10", "1000", "2000000"],
    "download": ["1", "0"],
}
# values of the right shape but wrong, each key's own
ODD = {
    "session": ["a b", "x" * 129, "../s1", "s1%00"],
    "name": ["", "%00", "a%0Ab.png", "x" * 5000],
    "model": ["DEFAULT", "nosuch", "blend", "default "],
    "strength": ["2", "-0.1", "0x1", "½", "1e-320", "nan", "0.5 "],
    "ref": ["x" * 5000],
    "page": ["x" * 5000],
    "since": ["99999999999999999999", "-1", "1.5"],
    "hidden": ["true", "2"],
    "bytes": ["99999999999999999999999", "-5", "1e3"],
    "download": ["true", "2"],
}
# (method, path with {session} and {job} to fill, the query keys the route takes)
ROUTES = [
    ("GET", "/", []),
    ("GET", "/static/{file}", []),
    ("GET", "/api/config", []),
    ("POST", "/api/jobs", ["session", "name", "model", "strength", "ref"]),
    ("POST", "/api/jobs", ["session", "name", "model", "strength", "ref"]),  # uploads: twice as likely
    ("GET", "/api/sessions/{session}/jobs", ["page", "since", "hidden"]),
    ("GET", "/api/sessions/{session}/room", ["name", "bytes"]),
    ("GET", "/api/sessions/{session}/events", []),
    ("POST", "/api/sessions/{session}/leave", ["page"]),
    ("POST", "/api/sessions/{session}/close", []),
    ("GET", "/api/sessions/{session}/results.zip", []),
    ("POST", "/api/jobs/{job}/remove", ["session"]),
    ("POST", "/api/jobs/{job}/again", ["session", "model", "strength"]),
    ("GET", "/api/jobs/{job}/{kind}", ["session", "download"]),
]
BODIES = ["png", "png", "jpeg", "damaged", "empty", "text", "too large", "too many pixels"]


def image_bytes(rng: random.Random, kind: str) -> bytes:
    """An upload's body of `kind` (BODIES)."""
    if kind in ("empty", "text"):
        return b"" if kind == "empty" else b"not an image at all\n"
    if kind == "too large":  # past --max-upload-mb 1
        return rng.randbytes(1_300_000)
    if kind == "too many pixels":  # past --max-megapixels 0.5, a small file (flat: it compresses well)
        pixels = np.full((800, 1000, 3), rng.randrange(256), np.uint8)
    else:
        shape = (rng.randint(1, 40), rng.randint(1, 40), 3)
        pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, shape, dtype=np.uint8)
    written = io.BytesIO()
    Image.fromarray(pixels).save(written, "JPEG" if kind == "jpeg" else "PNG")
    data = bytearray(written.getvalue())
    if kind == "damaged":
        for _ in range(rng.choice([1, 4, 16])):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        if rng.random() < 0.3:
            data = data[: rng.randrange(1, len(data))]
    return bytes(data)


def query(rng: random.Random, keys: list[str], hostile: bool) -> str:
    """The route's parameters: all valid, or (`hostile`) each valid, odd, hostile or left out, and sometimes one
    repeated or unknown."""
    pairs = []
    for key in keys:
        draw = rng.random() if hostile else 0.0
        if draw > 0.9:
            continue
        pool = VALID[key] if draw < 0.6 else ODD[key] if draw < 0.8 else HOSTILE
        pairs.append((key, rng.choice(pool)))
    if not hostile and ("model", "gan") in pairs:  # the dial blends default toward gan: with gan it is refused
        pairs = [(key, value) for key, value in pairs if key != "strength"]
    if hostile and pairs and rng.random() < 0.15:
        pairs.append(rng.choice(pairs))
    if hostile and rng.random() < 0.15:
        pairs.append((rng.choice(["x", "Session", "strength ", ""]), rng.choice(HOSTILE)))
    # values already percent-encoded (%FF, %00) are kept so: what a client sends as bytes
    return "&".join(f"{urllib.parse.quote(key)}={urllib.parse.quote(value, safe='%')}" for key, value in pairs)


def request_for(rng: random.Random, jobs: list[tuple[str, str]]) -> dict[str, Any]:
    """One request drawn at random: method, path, headers, body."""
    method, path, keys = rng.choice(ROUTES)
    hostile = rng.random() < 0.5
    session = rng.choice(SESSIONS) if not hostile or rng.random() < 0.7 else rng.choice(HOSTILE[1:] + ODD["session"])
    # a recent upload's job mostly: older ones are more often gone with their session (closed, left)
    job_session, job = rng.choice(jobs[-8:]) if jobs and rng.random() < 0.8 else (session, rng.choice(["nosuch", "0"]))
    of_a_job = "{job}" in path
    if of_a_job and rng.random() < 0.8:
        session = job_session
    path = path.format(
        session=urllib.parse.quote(session, safe="%"),
        job=job,
        kind=rng.choice(["original", "bicubic", "result", "result", "thumbnail", ""]),
        file=rng.choice(["app.js", "style.css", "index.html", "missing.js", "..%2Fapp.py"]),
    )
    text = query(rng, keys, hostile)
    if of_a_job and "session" in keys and (not hostile or rng.random() < 0.8):  # asked as the job's page asks it
        kept = [pair for pair in text.split("&") if pair and not pair.startswith("session=")]
        text = "&".join([f"session={urllib.parse.quote(session, safe='%')}", *kept])
    headers = {"Connection": "close"}
    if method == "POST" and (not hostile or rng.random() < 0.85):
        headers["X-SRFeat-Upload"] = "1"
    for header, values in (
        ("Content-Type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png"]),
        ("Range", ["bytes=0-10", "bytes=-5", "bytes=abc", "bytes=99999999-"]),
        ("Origin", ["http://evil.example", "null"]),
        ("Host", ["evil.example", "localhost:1", ""]),
    ):
        if hostile and rng.random() < 0.1:
            headers[header] = rng.choice(values)
    if hostile and method == "GET" and rng.random() < 0.1:
        method = rng.choice(["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
    elif hostile and method == "POST" and rng.random() < 0.1:
        method = rng.choice(["GET", "PUT", "PATCH"])
    upload = rng.choice(BODIES) if path == "/api/jobs" and method == "POST" else None
    return {
        "method": method,
        "path": path + (f"?{text}" if text else ""),
        "headers": headers,
        "upload": upload,
        "data": image_bytes(rng, upload) if upload else None,
    }


def send(address: tuple[str, int], sent: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The answer: status, content type, body (an event stream: its first event only), or what went wrong."""
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    started = time.monotonic()
    try:
        connection.putrequest(
            sent["method"], sent["path"], skip_host="Host" in sent["headers"], skip_accept_encoding=True
        )
        for key, value in sent["headers"].items():
            connection.putheader(key, value)
        if sent["data"] is not None:
            connection.putheader("Content-Length", str(len(sent["data"])))
        connection.endheaders()
        if sent["data"]:
            try:
                connection.send(sent["data"])
            except (BrokenPipeError, ConnectionResetError):  # refused before the body was all read: its answer
                pass
        response = connection.getresponse()
        kind = response.getheader("Content-Type", "")
        body = response.readline() if kind.startswith("text/event-stream") else response.read()
        return {"status": response.status, "type": kind, "body": body[:2000].decode("utf-8", "replace")}
    except TimeoutError:
        return {"failed": "timeout", "seconds": round(time.monotonic() - started, 1)}
    except (OSError, http.client.HTTPException) as error:
        return {"failed": f"{type(error).__name__}: {error}"[:200]}
    finally:
        connection.close()


def classes_of(sent: dict[str, Any], answer: dict[str, Any], log: list[str]) -> list[str]:
    """What happened; the rule-breaking classes in capitals."""
    found = []
    if answer.get("failed") == "timeout":
        found.append("HANG")
    elif "failed" in answer:
        # a body past the limit may be refused before it is all sent: the connection closes under the client
        found.append("closed while sending" if sent["upload"] == "too large" else "NO ANSWER")
    else:
        status = answer["status"]
        found.append(str(status))
        if status >= 500 and status != 503:
            found.append("SERVER ERROR")
        if status >= 400 and sent["path"].startswith("/api") and sent["method"] != "HEAD":
            try:
                error = json.loads(answer["body"])["error"]
                if not error or "\n" in error:
                    found.append("ERROR NOT ONE LINE")
            except (ValueError, KeyError, TypeError):
                found.append("ERROR NOT JSON")
    if any("Traceback" in line for line in log):
        found.append("TRACEBACK")
    if any(line.startswith(("ERROR", "CRITICAL")) for line in log):
        found.append("error logged")
    return found


def start_server(folder: Path) -> tuple[subprocess.Popen[str], tuple[str, int], Path]:
    """`srfeat serve` with small limits, its temporary files in a folder of its own; its address."""
    temporary = folder / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    limits = ["--max-upload-mb", "1", "--max-megapixels", "0.5", "--max-queued", "8", "--upload-timeout", "3"]
    server = subprocess.Popen(
        [sys.executable, "-m", "srfeat.cli", "serve", "--no-browser", "--device", "cpu", "--tile", "32", *limits],
        stdout=subprocess.PIPE,
        stderr=(folder / "server.log").open("w"),
        text=True,
        env=dict(os.environ, TMPDIR=str(temporary), OMP_NUM_THREADS="1"),
    )
    assert server.stdout is not None
    match = re.search(r"http://([\d.]+):(\d+)/", server.stdout.readline())
    if match is None:
        server.kill()
        raise SystemExit(f"srfeat serve printed no address: see {folder / 'server.log'}")
    return server, (match.group(1), int(match.group(2))), temporary


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where results.jsonl and the server's log go")
    parser.add_argument("--requests", type=int, default=2000, help="requests to send")
    parser.add_argument("--seed", type=int, default=1, help="the random seed: the same seed sends the same requests")
    parser.add_argument("--timeout", type=float, default=20, help="seconds an answer may take before it is a hang")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    server, address, temporary = start_server(args.folder)
    rng, jobs, counts = random.Random(args.seed), [], Counter[str]()
    log_path, log_seen = args.folder / "server.log", 0
    with (args.folder / "results.jsonl").open("w") as results:
        for number in range(args.requests):
            sent = request_for(rng, jobs)
            answer = send(address, sent, args.timeout)
            log = log_path.read_text(errors="replace").splitlines()
            new_lines, log_seen = log[log_seen:], len(log)
            classes = classes_of(sent, answer, new_lines)
            if server.poll() is not None:
                classes.append(f"SERVER EXITED ({server.returncode})")
            if answer.get("status") in (200, 201) and sent["upload"]:
                job_id = json.loads(answer["body"]).get("id")
                session = urllib.parse.parse_qs(sent["path"].partition("?")[2]).get("session", [""])[0]
                jobs.append((session, job_id))
            shown = {key: value for key, value in sent.items() if key != "data"}
            results.write(json.dumps({"number": number, **shown, **answer, "classes": classes, "log": new_lines}))
            results.write("\n")
            counts.update(classes)
            if any(breaks_rules(kind) for kind in classes):
                print(number, sent["method"], sent["path"][:150], sent["upload"], classes, answer.get("body", "")[:200])
            if server.poll() is not None:
                break
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        code = "HANG AT STOP"
    left = sorted(str(path.relative_to(temporary)) for path in temporary.rglob("*"))
    tail = log_path.read_text(errors="replace").splitlines()[log_seen:]
    stop = {
        "exit code": code,
        "left in its temporary folder": left,
        "traceback at stop": any("Traceback" in line for line in tail),
    }
    print(json.dumps({"stop": stop, "counts": dict(counts.most_common())}, indent=1))
    return 0 if code == 0 and not left and not stop["traceback at stop"] else 1


if __name__ == "__main__":
    sys.exit(main())
