"""A private inductor cache for one load: what a plan's stored programs write can be read by nothing else.

Why: loading an inductor artifact (`torch._inductor.CompiledArtifact.load`, binary format) does not run the
artifact from memory. It calls `torch.compiler.load_cache_artifacts`, whose `populate_cache` writes every
entry it carries into inductor's on-disk caches (FxGraphCache._write_to_local_cache -> cache_dir()/fxgraph,
AOTAutogradCache._write_to_local_cache -> cache_dir()/aotautograd, autotune results, and, inside the
FxGraphCache entry, Triton kernels that TritonBundler.read_and_emit writes to triton_cache_dir()), then looks
the entry up again (AOTAutogradCache._lookup) and imports its wrapper through PyCodeCache (cache_dir()/xx/).
The entries are keyed by names the artifact itself carries, so in the shared cache a tampered program sits
under the key of the clean graph: a later process that loads a clean plan, or compiles the same segment,
finds and runs it (tried: it does, with torch 2.14).

How: every one of those directories comes from `torch._inductor.runtime.cache_dir_utils.cache_dir()`, which
reads TORCHINDUCTOR_CACHE_DIR at each call, and `triton_cache_dir()`, which reads TRITON_CACHE_DIR first (the
variables torch's own `torch._inductor.utils.fresh_cache` sets, and that inductor's compile subprocesses are
handed with each job). So stored programs load with both pointing into a fresh `tempfile.mkdtemp` directory
(mode 0700: no other user can read or plant entries), `torch._inductor.utils.clear_caches()` drops the
in-memory memos of the old paths (PyCodeCache, CppCodeCache, get_local_cache_path, ...) on the way in and
out, and the directory is removed on the way out. The shared cache then only ever holds what inductor compiled
itself, which is what compiling segments at load reads. The variables are process-wide, so one private cache
is open at a time in a process (a lock), and everything that may touch the disk lazily (the first run of each
loaded program) happens inside it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading

PREFIX = "opara-load-"
_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
_lock = threading.RLock()  # guards the process-wide environment, not data of ours


@contextlib.contextmanager
def private_inductor_cache():
    """Inductor's and Triton's caches in a fresh private directory (yielded) until the block ends."""
    from torch._inductor import utils

    clear_caches = getattr(utils, "clear_caches", None) or utils.clear_inductor_caches  # its older name
    with _lock:
        root = tempfile.mkdtemp(prefix=PREFIX)  # mkdtemp makes it 0700
        saved = {name: os.environ.get(name) for name in _ENV}
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = root
        os.environ["TRITON_CACHE_DIR"] = os.path.join(root, "triton")
        clear_caches()
        try:
            yield root
        finally:
            clear_caches()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(root, ignore_errors=True)  # what cannot be removed stays private (0700)
