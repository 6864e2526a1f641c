"""Test helpers: data generators (from the package, resadapt_eval.probes.synth) and a local judge endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer

from resadapt_eval.probes.synth import make_videomme, write_video  # noqa: F401


class JudgeServer:
    """A local OpenAI-compatible chat endpoint. `reply` is the answer, or a function of the request's
    Authorization header (a leaky server that echoes it); with `key`, other keys get a 401.
    Every request is kept in `requests` (path, auth, body); `reply` may be changed between requests."""

    def __init__(self, reply: str | Callable[[str | None], str], key: str | None = None):
        self.requests: list[dict] = []
        self.reply = reply  # may be changed between requests
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                outer.requests.append({"path": self.path, "auth": auth, "body": body})
                if key is not None and auth != f"Bearer {key}":
                    self.send_response(401)
                    self.end_headers()
                    self.wfile.write(json.dumps({"error": f"bad key {auth}"}).encode())
                    return
                text = outer.reply(auth) if callable(outer.reply) else outer.reply
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "JudgeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def encode_box_video(path, codec: str, options: dict, n: int = 48, h: int = 64, w: int = 96, fps: int = 10,
                     vfr: bool = False):
    """A real encoded video of moving boxes (`synth.box_frames`) with PyAV; `vfr` spaces the frames 50,
    100 or 150 ms apart (seeded). Skips the test when this PyAV build has no such encoder."""
    from fractions import Fraction

    import av
    import numpy as np
    import pytest

    from resadapt_eval.probes.synth import box_frames

    try:
        av.codec.Codec(codec, "w")
    except Exception:
        pytest.skip(f"PyAV has no {codec} encoder here")
    rng, pts = np.random.default_rng(1), 0
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", dict(options)
        if vfr:
            s.codec_context.time_base = Fraction(1, 1000)
        for img in box_frames(n, h, w):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if vfr:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += int(rng.choice([50, 100, 150]))
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def full_decode(path):
    """Every frame of `path` decoded by PyAV from the start (rotation applied): the reference pixels."""
    import av
    import numpy as np

    from resadapt_eval.pipeline import media

    with av.open(str(path)) as c:
        return np.stack([media._rgb(f) for f in c.decode(c.streams.video[0])])
