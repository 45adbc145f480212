"""Serve a compiled plan set with Ray Serve: compile it as CI would, store the artifact, deploy it, send requests.

    python examples/serve_ray.py      # a local Ray on 127.0.0.1; the GPU if there is one, else the CPU path

In production the first step runs in CI (`oparac compile oparac.models.zoo:googlenet --batch 1,2,4,8
-o googlenet.plans`, the file kept as a build artifact) and only the deployment runs on the serving cluster:
docs/serving.md.
"""
import json
import os
import shutil
import socket
import tempfile
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import load, save

from oparac.buckets import compile_buckets
from oparac.models import zoo

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402
from ray import serve  # noqa: E402

from opara_runtime.serve import opara_app  # noqa: E402

device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a cost-model preview plan on the CPU path
model, (x,) = zoo.googlenet()
store = Path(tempfile.mkdtemp())  # stands in for the artifact store

# 1. CI: one plan per batch bucket in one artifact, and the weights beside it.
plans = compile_buckets(model.to(device), (x.to(device),), batches=(1, 2, 4), device=device)
plans.save(store / "googlenet.plans")
torch.save(model.state_dict(), store / "googlenet.pt")

# 2. The serving cluster: one replica per GPU (num_gpus=1 for a GPU plan), requests batched into the buckets.
ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(opara_app(store / "googlenet.plans", str(store / "googlenet.pt")), route_prefix="/googlenet")
url = f"http://127.0.0.1:{port}/googlenet"

# 3. A client: safetensors in, safetensors out (JSON works too: docs/serving.md).
with urllib.request.urlopen(url) as r:
    print("endpoint:", json.loads(r.read()))
images = torch.randn(3, 3, 224, 224)
request = urllib.request.Request(url, data=save({"x": images}), headers={"Content-Type": "application/octet-stream"})
with urllib.request.urlopen(request) as r:
    logits = load(r.read())["output"]
with torch.no_grad():
    print(logits.shape, "max difference from eager:", (logits - model.cpu()(images)).abs().max().item())

serve.shutdown()
ray.shutdown()
shutil.rmtree(store)
