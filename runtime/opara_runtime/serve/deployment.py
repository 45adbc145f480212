"""The Ray Serve deployment: a plan artifact and the model's weights, served over HTTP with @serve.batch batching.

One deployment replica per GPU (num_gpus=1; more GPUs and more nodes are more replicas), each holding a RunnerPool
of `runners` captured graphs on its GPU. Requests are JSON or safetensors bodies (serve/codec.py); requests the
deployment cannot serve get a 4xx whose JSON body carries the Opara error, and the deployment keeps serving.

    serve run opara_runtime.serve.deployment:build_app plan=model.plan model=weights.pt
"""
from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from opara_plan import InputError, OparaError, Plan, PlanSet, load_artifact
from opara_runtime.replicas import RunnerPool
from opara_runtime.serve.batching import batcher_for
from opara_runtime.serve.codec import (JSON, MediaTypeError, TooLargeError, decode, encode, error_body,
                                       media_type)
from opara_runtime.serve.weights import resolve_weights

STATUS = ((MediaTypeError, 415), (TooLargeError, 413), (InputError, 400), (OparaError, 500))
# Batches from one replica run at once where this Ray can (max_concurrent_batches, Ray >= 2.47): they then overlap
# on the pool's graphs. Older Ray runs one batch at a time, which the pool still spreads over its graphs.
_BATCH = dict(max_batch_size=8, batch_wait_timeout_s=0.005,
              **({"max_concurrent_batches": 4} if "max_concurrent_batches" in inspect.signature(serve.batch).parameters
                 else {}))


@serve.deployment
class OparaDeployment:
    """Loads the plan for the model's weights on this replica's device and serves POST requests at its route.

    plan: a path to the artifact, a plan or a plan set (or a Plan, a PlanSet); a plan set is batched into its
    buckets. model: what serve.weights.resolve_weights takes; runners: graphs
    in the replica's pool (default 2 on a GPU, 1 on the CPU); max_batch_size: requests per @serve.batch call
    (default: a full plan batch for every runner); tf32: where given, whether this replica's float32 matrix
    products and convolutions may use TF32 (a replica is a fresh process with torch's defaults, under which cuDNN
    convolutions may: pass False to match an fp32 reference run with TF32 off); load_options go to
    opara_runtime.load.
    """

    def __init__(self, plan, model, *, runners: int | None = None, device=None, max_batch_size: int | None = None,
                 batch_wait_timeout_s: float = 0.005, tf32: bool | None = None, **load_options) -> None:
        import torch

        if tf32 is not None:  # before any graph is captured: a capture fixes the kernels it records
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(tf32)
        if isinstance(plan, (str, Path)):
            plan = load_artifact(plan)
        on_gpu = (torch.cuda.is_available() and _target(plan).device_type == "cuda"
                  and (device is None or torch.device(device).type == "cuda"))
        pool = RunnerPool(plan, resolve_weights(model), replicas=runners or (2 if on_gpu else 1), device=device,
                          **load_options)
        self.batcher = batcher_for(pool)
        self.run_batch.set_max_batch_size(max_batch_size or self.batcher.max_batch * pool.replicas)
        self.run_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET":
            return Response(json.dumps(self.describe()), media_type=JSON)
        if request.method != "POST":
            return Response(error_body(InputError(f"method {request.method}: expected POST (or GET to describe "
                                                  f"the endpoint)")), status_code=405, media_type=JSON)
        try:
            kind = media_type(request.headers.get("content-type"))
            limit = self.batcher.max_body_bytes(kind)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise TooLargeError(f"request body: {declared} bytes, more than the {limit} bytes this "
                                    f"deployment's largest batch needs")
            body = await request.body()
            admitted = await asyncio.to_thread(self._admit, body, kind, limit)
            out = await self.run_batch(admitted)
            if isinstance(out, Exception):
                raise out
            return Response(await asyncio.to_thread(encode, out, kind), media_type=kind)
        except OparaError as e:
            return refusal(e)

    async def infer(self, inputs):
        """For callers inside the Ray cluster, through a DeploymentHandle (`await handle.infer.remote({"x": x})`):
        the checks and batching of a POST, without HTTP or the proxy. inputs: tensors by input name, or a list in
        the model's input order; returns the outputs in the model's structure, on the CPU. A request the
        deployment cannot serve raises the Opara error that a POST answers with a 4xx."""
        out = await self.run_batch(self.batcher.admit(inputs))
        if isinstance(out, Exception):
            raise out
        return out

    def describe(self) -> dict:
        b = self.batcher
        return {"inputs": [{"name": name, "expected": b.expected(k)} for k, name in enumerate(b.names)],
                "max_batch": b.max_batch, "formats": ["application/json", "application/octet-stream (safetensors)"]}

    def _admit(self, body: bytes, kind: str, limit: int):
        return self.batcher.admit(decode(body, kind, max_bytes=limit))

    @serve.batch(**_BATCH)
    async def run_batch(self, requests: list) -> list:
        return await asyncio.to_thread(self.batcher.run, requests)

    def __del__(self) -> None:
        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            batcher.close()


def refusal(error: OparaError) -> Response:
    """The error as a JSON body, with the status its class maps to in STATUS."""
    status = next(code for cls, code in STATUS if isinstance(error, cls))
    return Response(error_body(error), status_code=status, media_type=JSON)


def _target(artifact):
    return (artifact.plans[0] if isinstance(artifact, PlanSet) else artifact).target


def opara_app(plan: str | Path | Plan | PlanSet, model, *, num_gpus: float | None = None, num_replicas: int | str = 1,
              num_cpus: float = 1, max_ongoing_requests: int = 64, **options) -> serve.Application:
    """The deployment bound to a plan and weights, ready for serve.run. num_gpus: per replica, default 1 for a
    plan compiled for a GPU and 0 for a CPU plan; num_replicas: as Ray Serve takes it (an int or 'auto').
    Other options go to OparaDeployment (runners, device, max_batch_size, batch_wait_timeout_s, tf32, load
    options)."""
    if num_gpus is None:
        artifact = plan if isinstance(plan, (Plan, PlanSet)) else load_artifact(plan)
        num_gpus = 1 if _target(artifact).device_type == "cuda" else 0
    deployment = OparaDeployment.options(num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
                                         ray_actor_options={"num_gpus": num_gpus, "num_cpus": num_cpus})
    return deployment.bind(str(plan) if isinstance(plan, Path) else plan, model, **options)


def build_app(args: dict) -> serve.Application:
    """`serve run opara_runtime.serve.deployment:build_app plan=PATH model=REF [num_gpus=N runners=N ...]`."""
    args = dict(args)
    for key in ("plan", "model"):
        if key not in args:
            raise OparaError(f"build_app: expected {key}=..., found arguments {sorted(args)}")
    for key, kind in (("num_gpus", float), ("num_cpus", float), ("runners", int), ("max_batch_size", int),
                      ("max_ongoing_requests", int), ("batch_wait_timeout_s", float)):
        if key in args:
            args[key] = kind(args[key])
    if "tf32" in args:
        value = str(args["tf32"]).lower()
        if value not in ("true", "false", "1", "0"):
            raise OparaError(f"build_app: tf32={args['tf32']!r}, expected true or false")
        args["tf32"] = value in ("true", "1")
    if "num_replicas" in args and args["num_replicas"] != "auto":
        args["num_replicas"] = int(args["num_replicas"])
    return opara_app(args.pop("plan"), args.pop("model"), **args)
