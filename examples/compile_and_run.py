"""Compile a torchvision model into a plan, save it, load it with the runtime and run it."""
import torch
import torchvision

import opara_plan
import opara_runtime
import oparac

model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
x = torch.randn(1, 3, 224, 224)
device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a cost-model preview plan

plan = oparac.compile(model, (x,), device=device)       # profile, schedule, validate
plan.save("googlenet.plan")                              # atomic write

runner = opara_runtime.load(opara_plan.load_plan("googlenet.plan"), model.to(device))
y = runner(x.to(device))                                 # one CUDA-graph replay on a GPU
print(y.shape, (y - model.to(device)(x.to(device))).abs().max().item())
