"""Golden for tests/test_protocols.py: lmms-eval 0.7.3's own Qwen chat wrappers run up to their qwen-vl-utils call.

Run in an environment with lmms-eval 0.7.3 (`make test-lmms` builds .venv-lmms):
    .venv-lmms/bin/python tests/data/make_lmms_eval_nframes.py tests/data/lmms_eval_nframes.json
It records the video entry each wrapper hands to qwen-vl-utils (nframes, min/max pixels) and stops.
"""
import json, sys, types
from pathlib import Path
import av, numpy as np
import lmms_eval, lmms_eval.models.chat.qwen2_5_vl as m25, lmms_eval.models.chat.qwen3_vl as m3

class Stop(Exception):
    pass

captured = []
def fake_process_vision_info(batched_messages, **kw):
    for conv in batched_messages:
        for msg in conv:
            for item in msg["content"] if isinstance(msg["content"], list) else []:
                if item.get("type") == "video":
                    captured.append({k: v for k, v in item.items() if k not in ("video", "type")})
    raise Stop

m25.process_vision_info = fake_process_vision_info
m3.process_vision_info = fake_process_vision_info

def video(n, path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10); s.width = s.height = 32; s.pix_fmt = "yuv420p"
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 7 % 255, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)

class Proc:
    def apply_chat_template(self, *a, **k):
        return ["text"]

def ask(cls, family, path, max_num_frames):
    obj = object.__new__(cls)
    obj.batch_size_per_gpu, obj._rank = 1, 0
    obj.max_pixels, obj.min_pixels, obj.fps, obj.max_num_frames = 1605632, 256 * 28 * 28, None, max_num_frames
    obj.total_pixels = None
    obj.system_prompt = "You are a helpful assistant."
    obj.processor = Proc()
    obj.enable_thinking = None
    doc = {"q": 1}
    obj.task_dict = {"t": {"test": {0: doc}}}
    msgs = lambda d: [{"role": "user", "content": [{"type": "video", "url": path}, {"type": "text", "text": "q"}]}]
    req = types.SimpleNamespace(args=("ctx", msgs, {"max_new_tokens": 4}, 0, "t", "test"))
    captured.clear()
    try:
        cls.generate_until(obj, [req])
    except Stop:
        pass
    return dict(captured[0])

out = Path(sys.argv[1])
tmp = Path("/tmp/golden/videos"); tmp.mkdir(parents=True, exist_ok=True)
cases = []
for total in (1, 2, 3, 5, 8, 9, 16, 17, 31, 32, 33, 48, 64, 65, 100):
    path = video(total, tmp / f"v{total}.mp4")
    for mnf in (8, 16, 32, 64):
        for family, cls in (("qwen2_5_vl", m25.Qwen2_5_VL), ("qwen3_vl", m3.Qwen3_VL)):
            got = ask(cls, family, path, mnf)
            cases.append({"family": family, "max_num_frames": mnf, "total_frames": total, "nframes": got.get("nframes"),
                          "min_pixels": got.get("min_pixels"), "max_pixels": got.get("max_pixels"),
                          "fps": got.get("fps"), "max_frames": got.get("max_frames")})
out.write_text(json.dumps({"source": f"lmms-eval {lmms_eval.__version__ if hasattr(lmms_eval, '__version__') else '0.7.3'}: "
                           "lmms_eval/models/chat/qwen2_5_vl.py and qwen3_vl.py generate_until, run up to their "
                           "process_vision_info call (which records the video entry and stops)",
                           "cases": cases}, indent=1))
print(len(cases))
