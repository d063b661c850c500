"""Another tenant of the GPU: holds a CUDA context all along, runs bf16 GEMMs while a flag file exists.

usage: python3 neighbor.py FLAG_FILE STOP_FILE [SIZE]

Prints one JSON line when its CUDA context is ready. The GEMMs (SIZE^3, default 8192) are
launched back to back with a sync every 20, so the GPU's tensor pipes stay busy and the
engine beside it gets a share of the SMs only. Never changes any GPU setting.
"""
import json
import os
import sys
import time

import torch

flag, stop = sys.argv[1], sys.argv[2]
size = int(sys.argv[3]) if len(sys.argv) > 3 else 8192
a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
print(json.dumps({"ready": os.getpid()}), flush=True)
while not os.path.exists(stop):
    if os.path.exists(flag):
        for _ in range(20):
            c = a @ b
        torch.cuda.synchronize()
    else:
        time.sleep(0.05)
